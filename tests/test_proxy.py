"""`python -m benchmarks proxy`: pretrain every method per seed on coarse labels, probe the fine classes,
one table with the spread over seeds and the paired difference to SL; a second call reuses every run."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.cli import main as benchmarks_main
from benchmarks.commands.proxy import load_protocol
from pretrain.errors import UserError
from tests.conftest import run_main, set_args
from tests.test_proxy_data import write_fmnist

# the fmnist protocol, shrunk to seconds: 10 classes x 12 images, 16 px (the small stem keeps 2 x 2 in its last
# stage), 2 epochs of 2 steps
TINY_PROXY = ["model.arch=resnet18", "train.batch_size=48", "schedule.epochs=2", "schedule.warmup_epochs=0",
              "data.workers=0", "train.log_every=1", "data.image_size=16"]


@pytest.mark.multicore  # six pretrainings and probes: 1.4x faster on 2 threads
@pytest.mark.slow
def test_proxy_tier_writes_one_table_from_every_method_and_seed(tmp_path):
    source = tmp_path / "fm"
    source.mkdir()
    write_fmnist(source, train_per_class=12, test_per_class=6)
    args = ["-m", "benchmarks", "proxy", "--dataset", "fmnist", "--source", str(source), "--seeds", "0", "1",
            "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "--results", str(tmp_path / "results"), *set_args(TINY_PROXY)]
    # the protocol asks for 500 / 300 images a class; the tiny files hold 12 / 6
    too_few = run_main(benchmarks_main, args[2:])  # refusals and the no-op rerun: in this process
    assert too_few.returncode == 2 and "fewer than the 500 asked for" in too_few.stderr
    assert not (tmp_path / "runs").exists()

    args += ["--train-per-class", "12", "--val-per-class", "6"]
    result = run_main(benchmarks_main, args[2:])  # the command's own entry point, in this process
    assert result.returncode == 0, result.stderr[-3000:]

    table = (tmp_path / "results" / "proxy_fmnist.md").read_text()
    assert "## By method" in table and "## Difference to sl" in table and "## Every run" in table
    assert "python -m benchmarks proxy --dataset fmnist" in table  # the command sits next to the numbers
    # which backbone, stem, images, schedule and machine produced it
    assert "Backbone resnet18 with the small stem, 16 px crops (decoded once, augmented on the device); images: " \
        "120 train (12 a class), 60 val (6 a class); 2 epochs." in table and " UTC on CPU (" in table
    with open(tmp_path / "results" / "proxy_fmnist.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("sl", "sl-mlp", "look") for s in ("0", "1"))
    for row in rows:
        assert 0 <= float(row["linear_top1"]) <= 100 and 0 <= float(row["knn_top1"]) <= 100
        assert row["loss_spikes"] == "0" and float(row["peak_lr"]) == pytest.approx(0.1 * 48 / 256)
    # every run has its own pretraining directory (seed and settings in its name) and probe directory
    assert len({r["pretrain_dir"] for r in rows}) == 6 and len({r["probe_dir"] for r in rows}) == 6
    by_method = table.split("## By method")[1].split("##")[0]
    assert all(f"| {m} | 2 |" in by_method for m in ("sl", "sl-mlp", "look"))
    assert " ± " in by_method  # two seeds: a spread
    differences = table.split("## Difference to sl")[1].split("##")[0]
    assert "| sl-mlp |" in differences and "| look |" in differences and "| sl |" not in differences

    # a second call trains and probes nothing again, and writes the same numbers
    (report_file,) = (tmp_path / "runs").glob("fmnist-12-6-*/report.json")
    report = json.loads(report_file.read_text())
    again = run_main(benchmarks_main, args[2:])
    assert again.returncode == 0, again.stderr[-3000:]
    report2 = json.loads(report_file.read_text())
    assert report2["timings"]["pretrain_runs"] == 0 and report2["timings"]["probe_runs"] == 0
    assert [r["metrics"] for r in report2["runs"]] == [r["metrics"] for r in report["runs"]]


@pytest.mark.slow
def test_the_full_fashion_mnist_protocol_runs_at_a_reduced_size_and_says_how_long_it_would_take(tmp_path):
    source = tmp_path / "fm"
    source.mkdir()
    write_fmnist(source, train_per_class=8, test_per_class=4)
    protocol = load_protocol("fmnist-full")
    assert protocol.data == "fmnist" and protocol.train_per_class is None and protocol.val_per_class is None
    assert {"model.stem=small", "data.in_memory=true", "schedule.epochs=30"} <= set(protocol.overrides)
    result = run_main(benchmarks_main, [
        "proxy", "--dataset", "fmnist-full", "--source", str(source), "--seeds", "0", "--out", str(tmp_path / "runs"),
        "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "results"),
        "--train-per-class", "8", "--val-per-class", "4", *set_args([*TINY_PROXY, "train.batch_size=32"])])
    assert result.returncode == 0, result.stderr[-3000:]
    estimate = "the protocol as declared (9 runs of 60000 training images x 30 epochs, 10000 test images) " \
               "would take about "
    assert estimate in result.stdout and " cores) at the rate measured here" in result.stdout
    table = (tmp_path / "results" / "proxy_fmnist-full.md").read_text()
    assert "The protocol as declared would take about " in table and "the small stem" in table
    assert "80 train (8 a class), 40 val (4 a class)" in table  # the reduced size is what the table says it ran


def test_protocols_name_known_configs_and_a_baseline():
    for name in ("fmnist", "fmnist-full", "cifar100", "imagefolder"):
        protocol = load_protocol(name)
        assert protocol.dataset == name and "sl" in protocol.methods and len(protocol.seeds) >= 3
        assert name not in ("fmnist", "fmnist-full") or "model.stem=small" in protocol.overrides
    with pytest.raises(UserError, match="no proxy protocol"):
        load_protocol("mnist")
