"""`python -m benchmarks reference`: the smoke pipeline offline with stand-ins in a private cache, and the
table's verdicts on fixed measurements on both sides of the published spread."""

from __future__ import annotations

import pytest

from benchmarks.cli import main as benchmarks_main
from benchmarks.commands.reference_runs import Measured, markdown
from benchmarks.tasks import get_benchmark
from tests.conftest import run_main


@pytest.mark.slow
def test_reference_smoke_runs_the_pipeline_offline_and_leaves_torchs_cache_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch's own cache: must stay empty
    monkeypatch.chdir(tmp_path)  # the embedded data is generated under ./data/generated
    out = tmp_path / "bench"
    result = run_main(benchmarks_main, ["reference", "--task", "voc", "--schedule", "smoke", "--device", "cpu",
                                        "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    table = out / "reference-smoke" / "reference_voc.md"
    text = table.read_text()
    assert "> SMOKE: the pipeline on the embedded data with random stand-ins" in text
    row = next(line for line in text.splitlines() if "| mmselfsup-moco-v2-200ep | mIoU |" in line)
    assert "| mmseg | smoke |" in row and "(n=1)" in row and "| 67.55 (1 trial) |" in row
    assert "— (smoke: not compared)" in row
    stand_in = out / "reference-smoke" / "torch-home" / "hub" / "checkpoints" / \
        "mocov2_resnet50_8xb32-coslr-200e_in1k_20220225-89e03af4.pth"
    assert stand_in.is_file()  # the stand-in lives beside the runs
    assert not (tmp_path / "torch").exists()
    assert not (tmp_path / "results").exists()  # smoke numbers never go to results/


def _measured(values: dict[str, list[float]], trials: int = 5) -> Measured:
    benchmark = get_benchmark("voc-det", "detectron2")
    reference = benchmark.references["24k"]
    published = next(p for p in reference.published if p.ckpt == "moco-v2-800ep")
    return Measured(benchmark, "24k", reference, published, trials, values)


def test_the_table_judges_fixed_measurements_on_both_sides_of_the_published_spread():
    close = _measured({"AP50": [82.4, 82.6, 82.5, 82.3, 82.7], "AP": [57.1, 57.0, 57.2, 57.1, 56.9],
                       "AP75": [63.7, 63.9, 64.1, 63.8, 64.0]})
    text = markdown("voc-det", [close], smoke=False, command="make bench-reference TASK=voc-det GPUS=8")
    lines = {line.split(" | ")[4]: line for line in text.splitlines() if "| moco-v2-800ep |" in line}
    assert "| 82.50 ± 0.16 (n=5) | 82.5 ± 0.2 (5 trials) | +0.00 | reproduces (+0.00, within 0.2" in lines["AP50"]
    assert "| -0.34 | differs by -0.34 (more than 0.2: published std of 5 trials) |" in lines["AP"]
    assert "reproduces (-0.10, within 0.4" in lines["AP75"]
    assert text.startswith("# Does this install reproduce the literature?")
    assert "`make bench-reference TASK=voc-det GPUS=8` on " in text
    unfinished = markdown("voc-det", [_measured({"AP50": [82.4, 82.6, 82.5]})], smoke=False, command="")
    assert "incomplete: 3 of 5 trials" in unfinished


def test_reference_needs_data_except_for_smoke_and_a_task_with_a_published_reference():
    missing = run_main(benchmarks_main, ["reference", "--task", "voc-det"])
    assert missing.returncode == 2 and "--data is required" in missing.stderr
    none = run_main(benchmarks_main, ["reference", "--task", "ade20k", "--schedule", "smoke"])
    assert none.returncode == 2 and "no published reference for ade20k" in none.stderr
    assert "coco:mmdet:1x" in none.stderr and "voc-det:detectron2:24k" in none.stderr
