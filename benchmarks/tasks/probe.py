"""Frozen features: linear probe, kNN and intra-class diagnostics on an ImageFolder train/val pair.

The embedded data is the generated set labelled by sub-mode (coarse-to-fine).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.probe import run_probe

    return run_probe(spec)


def figures(rows, out: Path) -> list[str]:
    from benchmarks.frameworks.probe_figures import probe_figures

    return probe_figures(rows, out)


def embedded_fine_labels() -> Path:
    from pretrain.config import GeneratedDataConfig
    from pretrain.data.generated import fine_view, generate

    return fine_view(generate(GeneratedDataConfig()))


register(Benchmark(
    name="probe", framework="frozen", title="Frozen features: linear probe, kNN (k=20) and intra-class diagnostics",
    required_files=("train", "val"), embedded_data=embedded_fine_labels, run=run,
    columns=(Column("probe", "linear_top1", "linear_top1"), Column("probe", "knn_top1", "knn_top1"),
             Column("diagnostics", "within_between", "within_between"),
             Column("diagnostics", "effective_rank", "eff_rank"),
             Column("diagnostics", "submode_separability", "submode_sep"),
             Column("diagnostics", "knn_agreement", "knn_agree")),
    required=(("probe", "linear_top1"), ("probe", "knn_top1")),
    headline=("linear_top1", "knn_top1", "within_between", "submode_sep"),
    compared_metrics=("linear_top1", "knn_top1"),  # the diagnostics have no better direction
    schedules=("standard",), embedded_schedules=("standard",), demo_schedule="standard", converts=False,
    multi_process=False, by_method=True, figures=figures,
    note="linear_top1 / knn_top1: accuracy on the data's own (fine) labels; the diagnostics use the val "
         "features with the coarse classes of `coarse_map.csv` (sub-modes = fine labels) or the folders: "
         "within_between = within-class / between-class variance, eff_rank = mean per-class effective "
         "rank, submode_sep = sub-mode kNN accuracy inside each class, knn_agree = kNN class agreement; "
         "the 'by method' table averages the checkpoints of each method (e.g. pretraining seeds)",
))
