"""Two CPU processes under DDP (gloo) keep identical LOOK memories, equal to one process on the global batch."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pretrain.methods.look import LeaveOneOutKNN
from tests.background import background_command, background_result
from tests.conftest import REPO, TINY_DATA, TORCHRUN_2, run_cli, set_args

NUM_SAMPLES, GLOBAL_BATCH, STEPS, DIM = 48, 8, 4, 12


def make_method() -> LeaveOneOutKNN:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.ReLU())
    targets = torch.arange(NUM_SAMPLES) % 5
    params = LeaveOneOutKNN.Params(k=4, temperature=0.2, momentum=0.5, embed_dim=6, hidden_dim=10, chunk_size=13)
    method = LeaveOneOutKNN(backbone, 16, targets, params)
    method.eval()  # BatchNorm on running statistics: identical whether the batch is split or not
    return method


def global_batches():
    g = torch.Generator().manual_seed(42)
    data = torch.randn(NUM_SAMPLES, DIM, generator=g)
    targets = torch.arange(NUM_SAMPLES) % 5
    for _ in range(STEPS):
        idx = torch.randperm(NUM_SAMPLES, generator=g)[:GLOBAL_BATCH]
        yield data[idx], targets[idx], idx


def train_steps(method, model, rank: int, world: int):
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    local = GLOBAL_BATCH // world
    losses = []
    for x, y, idx in global_batches():
        sl = slice(rank * local, (rank + 1) * local)
        loss, _ = method.loss(model(x[sl]), y[sl], idx[sl])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    method = make_method()
    losses = train_steps(method, DistributedDataParallel(method), rank, world)
    method.check_consistent_across_ranks()
    torch.save({"memory": method.memory.state_dict(), "params": {k: v for k, v in method.state_dict().items()
                                                                  if k != "_extra_state"},
                "losses": torch.stack(losses)}, os.path.join(out_dir, f"rank{rank}.pt"))
    # A memory that diverges on one rank must be detected.
    if rank == 1:
        method.memory.embeddings[0, 0] += 1e-3
    try:
        method.check_consistent_across_ranks()
        detected = False
    except RuntimeError:
        detected = True
    torch.save(detected, os.path.join(out_dir, f"detected{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_memories_identical_and_equal_to_single_process(tmp_path):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in ("embeddings", "visited", "labels"):
        assert torch.equal(rank0["memory"][key], rank1["memory"][key]), key

    single = make_method()
    single_losses = train_steps(single, single, 0, 1)
    torch.testing.assert_close(rank0["memory"]["embeddings"], single.memory.embeddings, atol=1e-6, rtol=1e-5)
    assert torch.equal(rank0["memory"]["visited"], single.memory.visited)
    assert int(single.memory.visited.sum()) > GLOBAL_BATCH  # several steps' worth of slots were written
    # DDP averages the per-rank losses' gradients: the same update as the single process.
    for key, value in single.state_dict().items():
        if key != "_extra_state":
            torch.testing.assert_close(rank0["params"][key], value, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close((rank0["losses"] + rank1["losses"]) / 2, torch.stack(single_losses), atol=1e-5,
                               rtol=1e-4)
    assert torch.load(tmp_path / "detected0.pt") and torch.load(tmp_path / "detected1.pt")


@background_command("torchrun_look_runs", processes=2)
def _start_torchrun_look_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                              environ: dict[str, str]) -> Callable[[], dict]:
    """LOOK pretraining under torchrun in 2 processes, from image files and with the images on the device."""
    generated_dir, home = request.getfixturevalue("generated_dir"), factory.mktemp("torchrun_look")

    def run(in_memory: bool) -> tuple[Path, subprocess.CompletedProcess]:
        run_dir = home / f"in_memory_{in_memory}" / "run"
        overrides = [*TINY_DATA, f"data.generated_dir={generated_dir}", f"out_dir={run_dir}",
                     "train.batch_size=32", "data.workers=0", "schedule.epochs=2", "method.k=5",
                     "monitor.knn_every_epochs=1", "monitor.batch_size=7", "monitor.max_queries=15",  # 8 + 7 a rank
                     f"data.in_memory={str(in_memory).lower()}"]
        return run_dir, run_cli(*TORCHRUN_2, "-m", "pretrain", "train", "--config",
                                str(REPO / "pretrain/configs/look_cpu.yaml"), *set_args(overrides), timeout=900,
                                environ=environ)

    return lambda: {in_memory: run(in_memory) for in_memory in (False, True)}


torchrun_look_runs = background_result("torchrun_look_runs")


@pytest.mark.slow
@pytest.mark.parametrize("in_memory", [False, True], ids=["image files", "images on the device"])
def test_torchrun_two_processes_trains_look_end_to_end(torchrun_look_runs, in_memory):
    run_dir, result = torchrun_look_runs[in_memory]
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "log.jsonl").read_text()
    assert '"world_size": 2' in log and '"event": "done"' in log
    assert list((run_dir / "export").glob("look_resnet18_generated_ep2-*.pth"))
    # The run checked memory consistency across ranks at each epoch end (it raises otherwise);
    # the saved memory holds every slot the two ranks wrote.
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert int(ckpt["model"]["_extra_state"]["visited"].sum()) == 128

    knn = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
           if '"knn_monitor"' in line]
    assert [(row["epoch"], row["bank"], row["queries"]) for row in knn] == [(1, 128, 15), (2, 128, 15)]


def mean_colour() -> nn.Module:
    """A backbone whose features (each image's mean colour) do not depend on how images are batched."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.num_features = 3
    return model


def _monitor_worker(rank: int, world: int, init_file: str, config_file: str, out_dir: str) -> None:
    from pretrain.config import load_config
    from pretrain.knn_monitor import KnnMonitor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    monitor = KnnMonitor(load_config(config_file), [f"class_{c:02d}" for c in range(4)], rank, world,
                         torch.device("cpu"))
    features = {name: monitor._features(mean_colour(), name, contextlib.nullcontext()) for name in monitor.sets}
    torch.save(features, os.path.join(out_dir, f"monitor{rank}.pt"))
    dist.destroy_process_group()


def test_knn_monitor_shares_images_over_ranks_and_gathers_them_in_order(tmp_path, generated_dir):
    """Each rank embeds its block of the images (15 queries: 8 and 7, so one rank pads); after the gather
    every rank holds every image's features in the one-process order."""
    from pretrain.config import load_config, write_config
    from pretrain.knn_monitor import KnnMonitor

    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml", [
        *TINY_DATA, f"data.generated_dir={generated_dir}", "data.workers=0", "monitor.knn_every_epochs=1",
        "monitor.batch_size=4", "monitor.max_queries=15", "monitor.bank_per_class=9"])
    write_config(config, tmp_path / "config.yaml")
    single = KnnMonitor(config, [f"class_{c:02d}" for c in range(4)], 0, 1, torch.device("cpu"))
    expected = {name: single._features(mean_colour(), name, contextlib.nullcontext()) for name in single.sets}
    assert len(expected["bank"][0]) == 36 and len(expected["queries"][0]) == 15
    mp.start_processes(_monitor_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "config.yaml"),
                                              str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        gathered = torch.load(tmp_path / f"monitor{rank}.pt")
        for name, (features, labels) in expected.items():
            assert torch.equal(gathered[name][0], features), (rank, name)
            assert torch.equal(gathered[name][1], labels), (rank, name)
