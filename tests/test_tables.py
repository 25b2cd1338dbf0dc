"""The tables of `collect`, built from a fixed set of run directories and compared with checked-in files.

The run directories below cover every kind of row: several seeds (mean ± std), one seed (value alone),
a finished row with a failed seed, a row whose seeds all failed, an unfinished run, fewer finished seeds
than asked, runs with overrides, smoke runs, quoted rows, and the probe's by-method table. A change of
the tables' content shows here as a diff against `tests/expected_tables/`; after a deliberate change,
regenerate them with `UPDATE_EXPECTED_TABLES=1 pytest tests/test_tables.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EXPECTED = Path(__file__).parent / "expected_tables"
SHA = {"sl": "a1" * 32, "sl-mlp": "b2" * 32, "look": "c3" * 32}
PROTOCOL = {"world_size": 8, "global_batch": 16, "per_process_batch": 2, "lr": 0.02}


def _coco(ap: float) -> dict[str, dict[str, float]]:
    return {"bbox": {"AP": ap, "AP50": ap + 20, "AP75": ap + 2, "APs": float("nan")},
            "segm": {"AP": ap - 3, "AP50": ap + 17, "AP75": ap - 1}}


def _voc_det(ap50: float) -> dict[str, dict[str, float]]:
    return {"bbox": {"AP": ap50 - 25, "AP50": ap50, "AP75": ap50 - 22},
            "bbox_integral": {"AP": ap50 - 24, "AP50": ap50 + 1, "AP75": ap50 - 21}}


def _probe(top1: float) -> dict[str, dict[str, float]]:
    return {"probe": {"linear_top1": top1, "knn_top1": top1 - 4},
            "diagnostics": {"within_between": 0.3, "effective_rank": 5.5, "submode_separability": top1 / 100,
                            "knn_agreement": 0.8}}


# (task, framework, schedule, method, seed, outcome, opts, seeds asked): outcome is metrics, an error, or None
RUNS = [
    ("coco", "detectron2", "1x", "sl", 0, _coco(38.1), (), 3),
    ("coco", "detectron2", "1x", "sl", 1, _coco(38.5), (), 3),
    ("coco", "detectron2", "1x", "sl", 2, _coco(38.0), (), 3),
    ("coco", "detectron2", "1x", "look", 0, _coco(39.0), (), 2),
    ("coco", "detectron2", "1x", "look", 1, "RuntimeError: CUDA out of memory", (), 2),
    ("coco", "detectron2", "1x", "sl-mlp", 0, _coco(38.9), ("SOLVER.BASE_LR=0.01",), 1),
    ("coco", "mmdet", "1x", "sl-mlp", 0, "FileNotFoundError: instances_val2017.json", (), 1),
    ("coco", "mmdet", "smoke", "sl", 0, _coco(1.2), (), 1),
    ("coco", "mmdet", "smoke", "sl", 1, None, (), 1),
    ("voc-det", "detectron2", "24k", "sl", 0, _voc_det(81.2), (), 5),
    ("voc-det", "detectron2", "24k", "sl", 1, _voc_det(81.6), (), 5),
    ("voc-det", "detectron2", "24k", "sl", 2, _voc_det(80.9), (), 5),
    ("voc-det", "detectron2", "24k", "look", 0, _voc_det(82.0), (), 5),
    ("voc-det", "detectron2", "24k", "look", 1, _voc_det(82.3), (), 5),
    ("voc-det", "detectron2", "24k", "look", 2, _voc_det(81.5), (), 5),
    ("probe", "frozen", "standard", "sl", 0, _probe(60.0), (), 1),
    ("probe", "frozen", "standard", "look", 0, _probe(66.0), (), 1),
]
QUOTED = ("task,name,method,arch,framework,schedule,source,AP_bb,AP50_bb,AP75_bb,AP_mk,AP50_mk,AP75_mk\n"
          "coco,supervised IN-1k,sl,resnet50,detectron2,1x,MoCo paper Table 5,38.9,59.6,42.7,35.4,56.5,38.1\n")


def write_runs(root: Path) -> None:
    from benchmarks.runner import opts_suffix

    for task, framework, schedule, method, seed, outcome, opts, asked in RUNS:
        name = f"{method}_resnet50_imagenet_ep100-{SHA[method][:8]}"
        run_dir = root / task / framework / schedule / (name + opts_suffix(opts)) / f"seed{seed}"
        run_dir.mkdir(parents=True)
        record = {"task": task, "framework": framework, "framework_version": "9.9.9", "schedule": schedule,
                  "seed": seed, "seeds_asked": asked, "data": f"/data/{task}", "embedded_data": schedule == "smoke",
                  "checkpoint": f"/ckpts/{name}.pth", "checkpoint_sha256": SHA[method], "method": method,
                  "arch": "resnet50", "recipe": "imagenet 100 ep", "device": "cuda", "world_size": 8,
                  "opts": list(opts), "started": "2026-11-20T10:00:00+00:00"}
        (run_dir / "run.json").write_text(json.dumps(record))
        if isinstance(outcome, dict):
            (run_dir / "result.json").write_text(json.dumps({
                **record, "config_sha256": f"{seed:02d}" * 32, "protocol": PROTOCOL, "status": "finished",
                "finished": f"2026-11-2{seed + 1}T12:00:00+00:00", "metrics": outcome}))
            if task == "probe":  # what the probe leaves for its figures
                (run_dir / "work").mkdir()
                (run_dir / "work" / "plot_data.json").write_text(json.dumps({
                    "projection": [[0, 0], [1, 0], [0, 1], [1, 1]], "labels": [0, 0, 1, 1], "submodes": [0, 1, 2, 3],
                    "spectrum": [0.6, 0.3, 0.1, 0.0]}))
        elif isinstance(outcome, str):
            (run_dir / "failure.json").write_text(json.dumps({**record, "status": "failed", "error": outcome}))


def test_tables_match_the_checked_in_files(tmp_path):
    from benchmarks.commands.collect import collect

    runs, out = tmp_path / "runs", tmp_path / "results"
    write_runs(runs)
    out.mkdir()
    (out / "quoted.csv").write_text(QUOTED)
    by_task = collect(runs, out).rows
    assert sorted(by_task) == ["coco", "probe", "voc-det"]
    written = sorted(p.name for p in out.iterdir() if p.suffix in (".csv", ".md", ".json") and p.name != "quoted.csv")
    if os.environ.get("UPDATE_EXPECTED_TABLES"):
        EXPECTED.mkdir(exist_ok=True)
        for name in written:
            (EXPECTED / name).write_text((out / name).read_text())
    assert written == sorted(p.name for p in EXPECTED.iterdir()), "a table appeared or disappeared"
    for name in written:
        assert (out / name).read_text() == (EXPECTED / name).read_text(), f"{name} changed"
    assert all((out / f"{task}.png").stat().st_size > 0 for task in by_task)
    assert (out / "probe_projection.png").stat().st_size > 0 and (out / "probe_spectra.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["coco.md", "voc-det.md"])
def test_expected_tables_say_what_a_reader_needs(name):
    """What the checked-in files must keep saying, whatever their layout."""
    text = (EXPECTED / name).read_text()
    assert "± 0.0" not in text  # a single seed shows its value alone
    if name == "coco.md":
        assert "| 3 (0, 1, 2) | 38.2 ± 0.3 |" in text  # AP_bb of sl over seeds 0, 1, 2: mean 38.2, std 0.26
        assert "finished (1 failed; 1/2 seeds): seed 1: RuntimeError: CUDA out of memory" in text
        assert "*supervised IN-1k (quoted)*" in text and "opts: SOLVER.BASE_LR=0.01" in text
        assert "Smoke runs" in text and "finished (1 unfinished)" in text
        # the published results the COCO references declare, marked published, with their source
        assert "| *moco-v2-800ep (published)* | ImageNet-1M, MoCo v2, 800ep |" in text
        assert "| 1 trial(s), published | 38.0 |" in text and "published in open-mmlab/mmdetection@236a4f9" in text
    else:  # fewer finished seeds than asked: said in the seeds column and the status
        assert "| 3/5 (0, 1, 2) | 81.2 ± 0.4 |" in text and "finished (3/5 seeds)" in text
        assert "| 3/5 (0, 1, 2) | 81.9 ± 0.4 |" in text
        # look - sl paired by fine-tuning seed: 0.8, 0.7, 0.6; mean 0.7, sd 0.1, t(0.975, 2) = 4.303: ± 0.25
        assert "| detectron2 | 24k | voc-det | look | AP50 | 3 | +0.70 | [+0.45, +0.95] | better |" in text
        assert "| *moco-v2-800ep (published)* | ImageNet-1M, MoCo v2, 800ep |" in text
        assert "| 5 trial(s), published | 82.5 | 57.4 | 64.0 |" in text
        assert "published in facebookresearch/moco@132aea9 detection/README.md (blob d5bd80c)" in text
        assert "std 0.2 (AP50)" in text


def test_a_multi_seed_command_prints_its_table_rows_mean_and_std(tmp_path):
    """`benchmarks run --seeds N` ends with the summary of its own seeds, computed by collect."""
    from benchmarks.cli import _seeds_summary

    write_runs(tmp_path)
    sl = tmp_path / "coco" / "detectron2" / "1x" / f"sl_resnet50_imagenet_ep100-{SHA['sl'][:8]}"
    summary = _seeds_summary([sl / f"seed{seed}" for seed in (0, 1, 2)])
    # AP_bb over 38.1, 38.5, 38.0: mean 38.20, sample std 0.26; the look row beside it is not mixed in
    assert summary.startswith("mean ± std over 3 seeds (0, 1, 2), as in its table row: AP_bb 38.20 ± 0.26, ")
    two = _seeds_summary([sl / "seed0", sl / "seed1"])
    assert "over 2 seeds (0, 1)" in two and "AP_bb 38.30 ± 0.28" in two


def test_make_tables_prints_each_comparison_with_what_its_pairs_can_detect(tmp_path, capsys):
    from benchmarks.cli import main

    write_runs(tmp_path / "runs")
    assert main(["collect", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert ("  look − sl AP50 (detectron2/24k/voc-det): +0.70 [+0.45, +0.95], better (fine-tuning seeds); "
            "detectable 0.33") in printed
    assert "across tasks: " in printed and (tmp_path / "results" / "summary.md").is_file()
    # any checkpoint may be the baseline: then the other checkpoints are compared with it, by fine-tuning seed
    look = f"look_resnet50_imagenet_ep100-{SHA['look'][:8]}"
    assert main(["collect", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "by-name"),
                 "--baseline", look]) == 0
    printed = capsys.readouterr().out
    assert f"sl_resnet50_imagenet_ep100-{SHA['sl'][:8]} − {look} AP50 (detectron2/24k/voc-det): -0.70 " in printed
    # a baseline that no run has is a typo: one line, nothing written
    assert main(["collect", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "typo"), "--baseline", "SL"]) == 2
    assert "--baseline SL: no run under" in capsys.readouterr().err and not (tmp_path / "typo").exists()
