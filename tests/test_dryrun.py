"""The dry run of a real protocol: the COCO 1x config of both frameworks built in full, the converted
checkpoint loaded, one iteration trained here at the real input sizes with the per-GPU batch of 8 GPUs."""

from __future__ import annotations

import gc

import pytest

from benchmarks.commands.dryrun import STEPPED_WORLD_SIZE, markdown, rows_for, step_protocol
from tests.conftest import random_backbone

pytestmark = pytest.mark.multicore  # Mask R-CNN steps at the real sizes: 1.5x faster on 2 threads


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    return random_backbone(tmp_path_factory.mktemp("dry") / "ckpt", seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["detectron2", "mmdet"])
def test_coco_1x_protocol_builds_loads_and_steps_at_real_sizes(framework, resnet18, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded data is generated under ./data/generated
    gc.freeze()  # as this process's conftest does before each test
    record = step_protocol("coco", framework, "1x", resnet18, tmp_path / "dry", iters=1)
    if framework == "mmdet":  # the run kept what was alive out of the collector's way, and handed it all back
        assert gc.get_freeze_count() == 0
    assert record["global_batch"] == 16 and record["lr"] == pytest.approx(0.02)
    assert record["per_process_batch"] == 16 // STEPPED_WORLD_SIZE == 2 and record["world_size"] == 8
    assert len(record["seconds_per_iter"]) == 1 and record["seconds_per_iter"][0] > 0
    rows = rows_for("coco", framework, "1x", {**record, "length_real": "x"})
    assert [(r["world_size"], r["per_gpu_batch"], r["global_batch"]) for r in rows] == [
        (1, 16, 16), (8, 2, 16), (16, 1, 16)]
    assert f"| coco {framework} 1x | 16 | 1 | 16 | 0.02 |" in markdown(rows, 1)
    # the converted checkpoint was loaded into the full model (the weights file is the verified conversion)
    weights = list((tmp_path / "dry" / "coco" / framework / "1x" / "weights").glob("*"))
    assert any(w.name.endswith((".detectron2.pkl", ".mmdet.pth")) for w in weights)


def test_the_dry_run_reports_what_each_protocol_builds():
    from benchmarks.commands.dryrun import built_markdown
    from benchmarks.tasks import get_benchmark

    table = built_markdown({"voc-det detectron2 24k": get_benchmark("voc-det", "detectron2").built_semantics("24k")})
    assert "| protocol | norm layers: backbone | RoI heads | norm layers: RoI head (res5) |" in table
    assert "| voc-det detectron2 24k | NaiveSyncBatchNorm | Res5ROIHeadsExtraNorm | NaiveSyncBatchNorm |" in table
    assert built_markdown({}) == ""
