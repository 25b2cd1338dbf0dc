"""Classification transfer: the many-shot linear protocol over the standard datasets (frozen features)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.cls_linear_reference import MANY_SHOT, built_semantics, compare_reference
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.cls_linear import run_cls_linear

    return run_cls_linear(spec)


def check_opts(opts: tuple[str, ...]) -> None:
    from benchmarks.data.classification import check_names
    from benchmarks.frameworks.cls_linear import cls_options

    check_names(cls_options(opts).datasets or [])


def embedded_datasets() -> Path:
    from benchmarks.data.classification_generated import generate_classification

    return generate_classification()


def _columns() -> tuple[Column, ...]:
    from benchmarks.data.classification import DATASETS

    return (*(Column("cls", name, name) for name in DATASETS), Column("cls", "mean", "mean"),
            Column("cls", "datasets", "datasets"))


register(Benchmark(
    name="cls-linear", framework="frozen",
    title="Classification transfer: many-shot linear evaluation (logistic regression on frozen features)",
    required_files=(), embedded_data=embedded_datasets, run=run, columns=_columns(),
    required=(("cls", "mean"),), headline=("mean",), compared_metrics=("mean",),
    schedules=("many-shot", "smoke"), embedded_schedules=("smoke",), demo_schedule="smoke", converts=False,
    multi_process=False, by_method=True, check_opts=check_opts, references={"many-shot": MANY_SHOT},
    compare_reference=compare_reference, built_semantics=built_semantics,
    note="each dataset's own metric on its test split (top-1; mean per-class accuracy for Aircraft, Caltech-101, "
         "Flowers-102 and Pets; 11-point mAP for VOC2007), C chosen on its validation split; mean = the mean over the "
         "datasets the run found (datasets = how many): compare means over the same datasets only",
))
