"""benchmarks/: generated COCO-format data, and the Detectron2 Mask R-CNN smoke benchmark end to end."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks import runner
from benchmarks.data.coco import CocoSpec, generate_coco
from pretrain.checkpoint import export_backbone
from pretrain.errors import UserError
from tests.conftest import run_cli


def test_generated_coco_is_read_by_pycocotools_and_scores_ground_truth_at_ap_1(tmp_path):
    root = generate_coco(CocoSpec(train_images=4, val_images=6, seed=3), tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "train2017", "val2017"]
    gt = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert len(gt.getImgIds()) == 6 and {c["name"] for c in gt.loadCats(gt.getCatIds())} == {
        "triangle", "square", "hexagon"}
    for image in gt.loadImgs(gt.getImgIds()):
        assert (root / "val2017" / image["file_name"]).is_file()
    for iou_type in ("bbox", "segm"):
        predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                        "bbox": a["bbox"], "segmentation": a["segmentation"]} for a in gt.dataset["annotations"]]
        evaluation = COCOeval(gt, gt.loadRes(predictions), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    # deterministic from the seed
    again = generate_coco(CocoSpec(train_images=4, val_images=6, seed=3), tmp_path / "again")
    assert (again / "annotations" / "instances_val2017.json").read_text() == (
        root / "annotations" / "instances_val2017.json").read_text()


@pytest.fixture
def tiny_backbone(tmp_path):
    torch.manual_seed(0)
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    meta = {"method": "sl", "arch": "resnet18", "dataset": "generated", "epochs": 1, "dropped_heads": ["head"],
            "input": {"channel_order": "RGB", "pixel_range": [0, 1], "mean": [0.485, 0.456, 0.406],
                      "std": [0.229, 0.224, 0.225]}}
    return export_backbone(model.state_dict(), meta, tmp_path / "ckpt")


@pytest.mark.slow
def test_detectron2_smoke_benchmark_end_to_end_then_skips(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded COCO data is generated under ./data/generated
    out = tmp_path / "bench"
    result = run_cli("-m", "benchmarks", "run", "coco", "--ckpt", str(tiny_backbone), "--framework", "detectron2",
                     "--schedule", "smoke", "--out", str(out), timeout=900, )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "coco" / "detectron2" / "smoke" / tiny_backbone.name.split(".")[0] / "seed0"
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["framework"] == "detectron2" and record["method"] == "sl"
    for task in ("bbox", "segm"):  # numbers straight from COCOEvaluator (pycocotools)
        assert math.isfinite(record["metrics"][task]["AP"]) and 0 <= record["metrics"][task]["AP"] <= 100
    resolved = (run_dir / "config.yaml").read_text()
    assert "FORMAT: RGB" in resolved and "DEPTH: 18" in resolved and "STRIDE_IN_1X1: false" in resolved
    assert "- 123.675" in resolved  # pixel mean on the 0..255 scale, from the checkpoint's metadata
    assert (run_dir / "weights" / f"{tiny_backbone.name.split('.')[0]}.detectron2.pkl").is_file()
    assert (run_dir / "work" / "model_final.pth").is_file()

    before = (run_dir / "result.json").read_bytes()
    again = run_cli("-m", "benchmarks", "run", "coco", "--ckpt", str(tiny_backbone), "--schedule", "smoke",
                    "--out", str(out), timeout=300)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert (run_dir / "result.json").read_bytes() == before

    # A failing run (here: a checkpoint that cannot be converted) leaves the finished run as it was.
    broken = tmp_path / "broken.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, broken)
    failed = run_cli("-m", "benchmarks", "run", "coco", "--ckpt", str(broken), "--schedule", "smoke",
                     "--out", str(out), timeout=300)
    assert failed.returncode == 2 and "error: " in failed.stderr and "Traceback" not in failed.stderr
    assert (run_dir / "result.json").read_bytes() == before


def test_a_crashing_run_is_recorded_as_failed(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def crash(*args):
        raise FloatingPointError("Loss became infinite or NaN at iteration=3!")

    task = runner.TASKS[("coco", "detectron2")]
    monkeypatch.setitem(runner.TASKS, ("coco", "detectron2"), runner.Task(
        task.name, task.framework, task.required_files, task.embedded_data, crash))
    with pytest.raises(UserError, match="failed: FloatingPointError: Loss became infinite or NaN"):
        runner.run_benchmark("coco", tiny_backbone, "detectron2", "smoke", out=tmp_path / "bench")
    run_dir = tmp_path / "bench" / "coco" / "detectron2" / "smoke" / tiny_backbone.name.split(".")[0] / "seed0"
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["status"] == "failed" and "NaN" in failure["error"]
    assert not (run_dir / "result.json").exists()


def test_bad_benchmark_input_gets_one_message(tiny_backbone, tmp_path):
    cases = [
        (["coco", "--ckpt", str(tiny_backbone), "--schedule", "1x"], "--data is required for the 1x schedule"),
        (["coco", "--ckpt", str(tiny_backbone), "--data", str(tmp_path / "nope")],
         "coco data not found under"),
        (["coco", "--ckpt", str(tmp_path / "missing.pth")], "checkpoint not found"),
        (["coco", "--ckpt", str(tiny_backbone), "--framework", "caffe"], "no benchmark 'coco' for framework 'caffe'"),
        (["coco", "--ckpt", str(tiny_backbone), "--schedule", "3x"], "unknown schedule '3x'"),
    ]
    for args, message in cases:
        result = run_cli("-m", "benchmarks", "run", *args, "--out", str(tmp_path / "bench"))
        assert result.returncode == 2, (args, result.stderr[-1500:])
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert not (tmp_path / "bench").exists()
