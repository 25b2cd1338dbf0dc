"""Each method trains on the generated data, its loss falls, and it exports a clean backbone."""

from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch

from pretrain.checkpoint import BACKBONE_FORMAT
from pretrain.config import load_config
from pretrain.trainer import train
from tests.conftest import REPO

pytestmark = pytest.mark.multicore  # ResNet-18 trainings at 64 px: 1.5x faster on 2 threads


def read_steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def epoch_mean(steps, key, epochs):
    rows = [r[key] for r in steps if r["epoch"] in epochs]
    return sum(rows) / len(rows)


@pytest.mark.parametrize("method", ["sl", "slmlp", "look"])
def test_method_trains_and_loss_falls(method, tiny_overrides, tmp_path):
    # 64 px: at 32 px ResNet-18's last feature map is 1x1 and LOOK barely moves in a few dozen steps.
    overrides = [*tiny_overrides, "data.generated.train_per_mode=24", "data.generated.image_size=64",
                 "data.image_size=64", "schedule.epochs=5", "optim.lr_per_256=0.4",  # lr 0.05 at batch 32
                 "monitor.knn_every_epochs=2"]
    if method == "look":
        overrides += ["method.k=5"]
    config = load_config(REPO / f"pretrain/configs/{method}_cpu.yaml", overrides)
    exported = train(config)

    steps = read_steps(tmp_path / "run")
    assert len(steps) == 5 * 6  # 192 images / batch 32, 5 epochs
    # the same numbers as TensorBoard scalars, beside the log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert "train/lr" in events.Tags()["scalars"] and len(losses) == len(steps)
    assert losses == pytest.approx([s["loss"] for s in steps], rel=1e-6)
    # the online kNN monitor ran every 2 epochs and after the last: logged, in TensorBoard, with the backbone
    knn = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
           if '"knn_monitor"' in line]
    assert [row["epoch"] for row in knn] == [2, 4, 5]
    assert all(row["bank"] == 192 and row["queries"] == 16 and 0 <= row["knn_top1"] <= 100 for row in knn)
    assert [e.value for e in events.Scalars("monitor/knn_top1")] == pytest.approx([r["knn_top1"] for r in knn])
    first, last = epoch_mean(steps, "loss", {0}), epoch_mean(steps, "loss", {3, 4})
    assert last < 0.8 * first, (first, last)
    if method == "look":
        # p (soft kNN agreement, 0 for images without a positive neighbour) must rise too: the loss
        # alone could also fall by losing positives.
        assert epoch_mean(steps, "p_mean", {3, 4}) > epoch_mean(steps, "p_mean", {0}) + 0.1

    # The exported file: backbone only, weights-only loadable, named by its own hash, with metadata.
    assert hashlib.sha256(exported.read_bytes()).hexdigest()[:8] == exported.stem.rsplit("-", 1)[1]
    payload = torch.load(exported, weights_only=True)
    meta = payload["meta"]
    assert meta["format"] == BACKBONE_FORMAT and meta["method"] == config.method_name
    assert meta["arch"] == "resnet18" and meta["epochs"] == 5 and meta["dataset"] == "generated"
    assert meta["input"] == {"channel_order": "RGB", "pixel_range": [0, 1], "mean": config.data.mean,
                             "std": config.data.std, "image_size": 64}
    assert "head" in meta["dropped_heads"]
    assert (method == "look") == ("memory" in meta["dropped_heads"])
    assert [row["epoch"] for row in meta["knn_monitor"]] == [2, 4, 5]
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model.load_state_dict(payload["state_dict"], strict=True)  # nothing missing, nothing extra
    assert not any(k.startswith(("fc.", "head", "_extra")) for k in payload["state_dict"])
    # every run writes its resolved config, with the method's defaults filled in
    resolved = load_config(tmp_path / "run" / "config.yaml")
    assert resolved.to_dict() == config.to_dict()
    assert set(resolved.method) > {"name"}


def test_rerunning_a_finished_run_does_not_train_again(tiny_overrides, tmp_path):
    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml", [*tiny_overrides, "schedule.epochs=1"])
    first = train(config)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    again = train(config)
    assert again == first
    assert ckpt.read_bytes() == before
    assert len(read_steps(tmp_path / "run")) == 4


def test_periodic_checkpoints_are_kept(tiny_overrides, tmp_path):
    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml",
                         [*tiny_overrides, "schedule.epochs=4", "train.keep_every_epochs=2"])
    train(config)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_0002.pt", "epoch_0004.pt", "last.pt"]
    assert torch.load(tmp_path / "run" / "checkpoints" / "epoch_0002.pt", weights_only=True)["epoch"] == 2


def test_knn_monitor_leaves_training_unchanged_to_the_bit(tiny_overrides, tmp_path):
    """The monitor runs the backbone in eval mode between epochs: no BatchNorm statistic, weight, or random
    draw of the run may change because it ran (it would make a monitored run another run)."""
    states = {}
    for every in (0, 1):
        overrides = [*tiny_overrides, "schedule.epochs=2", "data.workers=1", f"out_dir={tmp_path / str(every)}",
                     f"monitor.knn_every_epochs={every}"]
        train(load_config(REPO / "pretrain/configs/sl_cpu.yaml", overrides))
        states[every] = torch.load(tmp_path / str(every) / "checkpoints" / "last.pt", weights_only=True)
    assert len(states[1]["knn_monitor"]) == 2 and not states[0]["knn_monitor"]
    assert states[0]["model"].keys() == states[1]["model"].keys()
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
    # and it is no part of the run's identity: the monitored run is the same config hash
    assert states[0]["config_hash"] == states[1]["config_hash"]
