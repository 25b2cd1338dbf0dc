"""Bad input gets one clear message and a non-zero exit, and nothing already written is damaged."""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, run_main, set_args

SL = str(REPO / "pretrain/configs/sl_cpu.yaml")


def train_cli(*extra: str, config: str = SL):
    from pretrain.cli import main

    return run_main(main, ["train", "--config", config, *extra])


def assert_clean_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def write_images(folder, count, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i}.png")


def digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_missing_dataset_folder(tiny_overrides, tmp_path):
    result = train_cli("--data", str(tmp_path / "nope"), *set_args(tiny_overrides))
    assert_clean_error(result, "dataset folder not found", str(tmp_path / "nope"))
    assert not (tmp_path / "run").exists()


def test_knn_monitor_on_real_data_needs_a_held_out_folder(tiny_overrides, tmp_path):
    for name in ("cat", "dog"):
        write_images(tmp_path / "data" / name, 20)
    write_images(tmp_path / "val" / "cat", 2)
    result = train_cli("--data", str(tmp_path / "data"), *set_args([*tiny_overrides, "monitor.knn_every_epochs=1"]))
    assert_clean_error(result, "monitor.val_root")
    result = train_cli("--data", str(tmp_path / "data"), *set_args(
        [*tiny_overrides, "monitor.knn_every_epochs=1", f"monitor.val_root={tmp_path / 'val'}"]))
    assert_clean_error(result, "classes differ", str(tmp_path / "val"))
    assert not (tmp_path / "run").exists()


def test_folder_without_class_folders(tiny_overrides, tmp_path):
    write_images(tmp_path / "flat", 3)
    result = train_cli("--data", str(tmp_path / "flat"), *set_args(tiny_overrides))
    assert_clean_error(result, "no class folders", "<root>/<class>/<image>")


def test_empty_class_folder(tiny_overrides, tmp_path):
    write_images(tmp_path / "data" / "cat", 40)
    (tmp_path / "data" / "dog").mkdir()
    result = train_cli("--data", str(tmp_path / "data"), *set_args(tiny_overrides))
    assert_clean_error(result, "empty class folder", "dog")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_the_file(tiny_overrides, tmp_path, workers):
    write_images(tmp_path / "data" / "a", 20)
    write_images(tmp_path / "data" / "b", 20)
    bad = tmp_path / "data" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    children = set(multiprocessing.active_children())
    result = train_cli("--data", str(tmp_path / "data"), *set_args([*tiny_overrides, f"data.workers={workers}"]))
    assert_clean_error(result, "corrupt image file", str(bad))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    # the loader's worker stopped with the failed epoch, not left to the garbage collector (a 5 s timeout)
    assert set(multiprocessing.active_children()) <= children


def test_unknown_method(tiny_overrides):
    assert_clean_error(train_cli(*set_args([*tiny_overrides, "method.name=lookk"])),
                       "unknown method 'lookk'", "did you mean 'look'")


def test_unknown_arch(tiny_overrides):
    assert_clean_error(train_cli(*set_args([*tiny_overrides, "model.arch=resnet5O"])), "unknown arch 'resnet5O'")


def test_unknown_config_key_and_wrong_type(tiny_overrides):
    assert_clean_error(train_cli(*set_args([*tiny_overrides, "train.batchsize=8"])),
                       "unknown config key 'train.batchsize'", "did you mean 'batch_size'")
    assert_clean_error(train_cli(*set_args([*tiny_overrides, "schedule.epochs=many"])),
                       "'schedule.epochs' must be int")
    assert_clean_error(train_cli(*set_args([*tiny_overrides, "method.temperature=0.1"])),
                       "unknown config key 'method.temperature'")  # sl has no temperature


def test_missing_config_file():
    assert_clean_error(train_cli(config="pretrain/configs/nope.yaml"), "config file not found")


def test_resume_from_another_config_is_refused_and_nothing_is_touched(tiny_overrides, tmp_path):
    look = str(REPO / "pretrain/configs/look_cpu.yaml")
    first = train_cli(*set_args([*tiny_overrides, "schedule.epochs=1", "method.k=5"]), config=look)
    assert first.returncode == 0, first.stderr[-2000:]
    before = digest(tmp_path / "run")
    result = train_cli(*set_args([*tiny_overrides, "schedule.epochs=1", "method.k=7"]), config=look)
    assert_clean_error(result, "cannot resume", "method.k: 5 in checkpoint, 7 now")
    assert digest(tmp_path / "run") == before


@pytest.mark.parametrize("kind", ["torch-save-of-object", "plain-pickle", "garbage", "foreign-weights", "missing"])
def test_foreign_or_broken_resume_checkpoint(tiny_overrides, tmp_path, kind):
    path = tmp_path / "foreign.pt"
    if kind == "torch-save-of-object":
        torch.save({"model": argparse.Namespace(lr=1)}, path)  # unpickling it would construct a class
        want = "not a weights-only checkpoint: it pickles the Python object argparse.Namespace"
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"model": [1, 2]}))
        want = "not a PyTorch weights file"
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01 definitely not a checkpoint")
        want = "cannot read checkpoint"
    elif kind == "foreign-weights":
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
        want = "not a pretraining checkpoint of this suite"
    else:
        want = "checkpoint not found"
    before = path.read_bytes() if path.exists() else None
    assert_clean_error(train_cli("--resume", str(path), *set_args(tiny_overrides)), want, str(path))
    assert (path.read_bytes() if path.exists() else None) == before
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_diverged_run_stops_with_a_message_and_keeps_the_last_checkpoint(tiny_overrides, tmp_path):
    ok = train_cli(*set_args([*tiny_overrides, "schedule.epochs=1"]))
    assert ok.returncode == 0, ok.stderr[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    # Same run, resumed with a learning rate no network survives: the loss turns NaN / inf.
    result = train_cli("--resume", str(last), "--out", str(tmp_path / "run2"),
                       *set_args([*tiny_overrides, "schedule.epochs=1"]))
    assert result.returncode == 0  # finished run: nothing to do
    result = train_cli(*set_args([*tiny_overrides, "schedule.epochs=3", "optim.lr_per_256=1e30",
                                  f"out_dir={tmp_path / 'run3'}"]))
    assert_clean_error(result, "training diverged")
    assert last.read_bytes() == before
    assert not list((tmp_path / "run3").glob("export/*.pth"))
