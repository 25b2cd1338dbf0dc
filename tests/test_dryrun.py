"""The dry run of a real protocol: the COCO 1x config of both frameworks built in full, the converted
checkpoint loaded, one iteration trained here at the real input sizes with the per-GPU batch of 8 GPUs."""

from __future__ import annotations

import pytest
import torch

from benchmarks.dryrun import STEPPED_WORLD_SIZE, markdown, rows_for, step_protocol
from pretrain.checkpoint import export_backbone


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    import timm

    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    meta = {"method": "sl", "arch": "resnet18", "dataset": "generated", "epochs": 1, "dropped_heads": [],
            "input": {"channel_order": "RGB", "pixel_range": [0, 1], "mean": [0.485, 0.456, 0.406],
                      "std": [0.229, 0.224, 0.225]}}
    return export_backbone(model.state_dict(), meta, tmp_path_factory.mktemp("dry") / "ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["detectron2", "mmdet"])
def test_coco_1x_protocol_builds_loads_and_steps_at_real_sizes(framework, resnet18, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded data is generated under ./data/generated
    record = step_protocol("coco", framework, "1x", resnet18, tmp_path / "dry", iters=1)
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
