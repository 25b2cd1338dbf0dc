"""`python -m benchmarks proxy`: pretrain every method per seed on coarse labels, probe the fine classes,
one table with the spread over seeds and the paired difference to SL; a second call reuses every run."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.cli import main as benchmarks_main
from benchmarks.commands.proxy import load_protocol
from pretrain.errors import UserError
from tests.background import background_command, background_result
from tests.conftest import run_cli, run_main, set_args
from tests.test_proxy_data import write_fmnist

# the fmnist protocol, shrunk to seconds: 10 classes x 12 images, 16 px (the small stem keeps 2 x 2 in its last
# stage), 2 epochs of 2 steps
TINY_PROXY = ["model.arch=resnet18", "train.batch_size=48", "schedule.epochs=2", "schedule.warmup_epochs=0",
              "data.workers=0", "train.log_every=1", "data.image_size=16"]


def _proxy_args(dataset: str, source: Path, folder: Path, overrides: list[str], *extra: str) -> list[str]:
    return ["proxy", "--dataset", dataset, "--source", str(source), "--out", str(folder / "runs"),
            "--data-dir", str(folder / "data"), "--results", str(folder / "results"), *extra, *set_args(overrides)]


@background_command("proxy_runs")
def _start_proxy_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                      environ: dict[str, str]) -> Callable[[], dict]:
    """The fmnist tier, every method and 2 seeds, on 12 / 6 images a class; and the one-GPU protocol
    (fmnist-full) at a reduced size, one seed (run while the other tests run: tests/background.py)."""
    tier, full = factory.mktemp("proxy_tier"), factory.mktemp("proxy_full")
    for folder in (tier, full):
        (folder / "fm").mkdir()
    write_fmnist(tier / "fm", train_per_class=12, test_per_class=6)
    write_fmnist(full / "fm", train_per_class=8, test_per_class=4)
    tier_args = _proxy_args("fmnist", tier / "fm", tier, TINY_PROXY, "--seeds", "0", "1",
                            "--train-per-class", "12", "--val-per-class", "6", "--cls-linear-schedule", "smoke")
    full_args = _proxy_args("fmnist-full", full / "fm", full, [*TINY_PROXY, "train.batch_size=32"], "--seeds", "0",
                            "--train-per-class", "8", "--val-per-class", "4", "--cls-linear-schedule", "smoke")
    return lambda: {"tier": tier, "tier_args": tier_args, "full": full,
                    "tier_result": run_cli("-m", "benchmarks", *tier_args, timeout=900, environ=environ),
                    "full_result": run_cli("-m", "benchmarks", *full_args, timeout=900, environ=environ)}


proxy_runs = background_result("proxy_runs")


def test_the_proxy_tier_refuses_a_source_with_fewer_images_than_the_protocol_asks_for(tmp_path):
    source = tmp_path / "fm"
    source.mkdir()
    write_fmnist(source, train_per_class=12, test_per_class=6)
    # the protocol asks for 500 / 300 images a class; the tiny files hold 12 / 6
    too_few = run_main(benchmarks_main, _proxy_args("fmnist", source, tmp_path, TINY_PROXY, "--seeds", "0", "1"))
    assert too_few.returncode == 2 and "fewer than the 500 asked for" in too_few.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_proxy_tier_writes_one_table_from_every_method_and_seed(proxy_runs):
    tmp_path, args, result = proxy_runs["tier"], proxy_runs["tier_args"], proxy_runs["tier_result"]
    assert result.returncode == 0, result.stderr[-3000:]

    table = (tmp_path / "results" / "proxy_fmnist.md").read_text()
    assert "## By method" in table and "## Difference to sl" in table and "## Every run" in table
    assert "python -m benchmarks proxy --dataset fmnist" in table  # the command sits next to the numbers
    assert "The cls-linear runs used the smoke schedule" in table
    # which backbone, stem, images, schedule and machine produced it
    assert "Backbone resnet18 with the small stem, 16 px crops (decoded once, augmented on the device); images: " \
        "120 train (12 a class), 60 val (6 a class); 2 epochs." in table and " UTC on CPU (" in table
    with open(tmp_path / "results" / "proxy_fmnist.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("sl", "sl-mlp", "look") for s in ("0", "1"))
    for row in rows:
        assert 0 <= float(row["linear_top1"]) <= 100 and 0 <= float(row["knn_top1"]) <= 100
        # the many-shot linear protocol on the fine classes: the tier's 12 training images a class at the
        # pretraining crop size, scored on every test image of the files
        cls_run = json.loads((Path(row["cls_linear_dir"]) / "result.json").read_text())
        resolved = json.loads((Path(row["cls_linear_dir"]) / "config.yaml").read_text())["per_dataset"]["fmnist"]
        assert float(row["cls_linear"]) == pytest.approx(cls_run["metrics"]["cls"]["fmnist"], abs=1e-3)
        assert (cls_run["schedule"], cls_run["pretrain_seed"]) == ("smoke", int(row["seed"]))  # as asked
        assert (resolved["train"] + resolved["val"], resolved["test"]) == (120, 60)
        assert row["loss_spikes"] == "0" and float(row["peak_lr"]) == pytest.approx(0.1 * 48 / 256)
        # what pairs two methods' checkpoints in every table: the pretraining seed, recorded with each run
        probe = json.loads((Path(row["probe_dir"]) / "result.json").read_text())
        assert probe["pretrain_seed"] == int(row["seed"])
    # every run has its own pretraining directory (seed and settings in its name) and probe directory
    assert len({r["pretrain_dir"] for r in rows}) == 6 and len({r["probe_dir"] for r in rows}) == 6
    by_method = table.split("## By method")[1].split("##")[0]
    assert all(f"| {m} | 2 |" in by_method for m in ("sl", "sl-mlp", "look"))
    assert " ± " in by_method  # two seeds: a spread
    differences = table.split("## Difference to sl")[1].split("##")[0]
    assert "| sl-mlp |" in differences and "| look |" in differences and "| sl |" not in differences
    # paired by seed: 2 pairs a row, an interval from Student's t and a verdict in words
    compared = [line for line in differences.splitlines() if line.startswith(("| sl-mlp |", "| look |"))]
    assert len(compared) == 8 and all(re.match(r"\| (sl-mlp|look) \| \w+ \| 2 \| [+-]\d+\.\d\d \| \[[+-]", row)
                                      for row in compared), compared
    assert all(re.search(r"\| (better|worse|not distinguishable with 2 pairs) \|", row) for row in compared)

    # a second call trains and probes nothing again, and writes the same numbers
    (report_file,) = (tmp_path / "runs").glob("fmnist-12-6-*/report.json")
    report = json.loads(report_file.read_text())
    again = run_main(benchmarks_main, args)  # in this process
    assert again.returncode == 0, again.stderr[-3000:]
    report2 = json.loads(report_file.read_text())
    assert report2["timings"]["pretrain_runs"] == 0 and report2["timings"]["probe_runs"] == 0
    assert report2["timings"]["cls_linear_runs"] == 0
    assert [r["metrics"] for r in report2["runs"]] == [r["metrics"] for r in report["runs"]]


@pytest.mark.slow
def test_the_full_fashion_mnist_protocol_runs_at_a_reduced_size_and_says_how_long_it_would_take(proxy_runs):
    protocol = load_protocol("fmnist-full")
    assert protocol.data == "fmnist" and protocol.train_per_class is None and protocol.val_per_class is None
    assert {"model.stem=small", "data.in_memory=true", "schedule.epochs=30"} <= set(protocol.overrides)
    tmp_path, result = proxy_runs["full"], proxy_runs["full_result"]
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


def test_a_protocol_scores_with_cls_linear_only_the_dataset_it_reads(tmp_path, monkeypatch):
    import benchmarks.commands.proxy as proxy

    text = (proxy.PROTOCOLS / "cifar100.yaml").read_text()
    (tmp_path / "cifar100.yaml").write_text(text + "\ncls_linear: cifar100\n")
    monkeypatch.setattr(proxy, "PROTOCOLS", tmp_path)
    with pytest.raises(UserError, match=r"cls_linear: fmnist is the one cls-linear dataset a tier reads .*got "
                                        r"'cifar100'$"):
        proxy.load_protocol("cifar100")
