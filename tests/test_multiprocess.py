"""Every benchmark in 2 CPU processes (gloo), end to end, with the frameworks' own evaluators: the protocol's
global batch split over the processes, recorded once; resume refused under another process count;
overrides through the frameworks' own mechanisms. These are the GPU code paths (launch, DDP, SyncBN,
distributed samplers and evaluators) with CPU stand-ins only for what needs CUDA."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchmarks.cli import main as benchmarks_main
from benchmarks.spec import RunSpec, TrainResult
from tests.conftest import (
    REPO,
    SHORTER,
    TWO_PROCESS_BENCHMARKS,
    UNDER_TORCHRUN,
    run_main,
    two_process_run_dir,
)

HEADLINE = {"coco": ("bbox", "AP"), "voc": ("sem_seg", "mIoU"), "ade20k": ("sem_seg", "mIoU")}


@pytest.mark.slow
@pytest.mark.parametrize("task,framework", TWO_PROCESS_BENCHMARKS)
def test_benchmark_runs_in_two_processes_with_the_protocols_global_batch(two_process_runs, task, framework):
    result = two_process_runs["results"][(task, framework)]
    assert result.returncode == 0, result.stderr[-4000:]
    directory = two_process_run_dir(two_process_runs, task, framework)
    assert result.stdout.count(f"run directory: {directory}") == 1  # rank 0 reports, once
    if (task, framework) in UNDER_TORCHRUN:  # every process resolved the run; rank 0 alone converted it
        assert len(list((directory / "weights").glob(f"*.{framework}.pth"))) == 1
    record = json.loads((directory / "result.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2 and record["device"] == "cpu"
    # no schedule named and no data: the smoke schedule on the embedded data, said first and recorded
    assert record["schedule"] == "smoke" and record["schedule_reason"].startswith("the embedded data, because")
    assert result.stdout.count(f"{task}/{framework}: schedule smoke (the embedded data, because no data") == 1
    protocol = record["protocol"]
    # the smoke protocol's global batch of 2 images, one per process
    assert (protocol["world_size"], protocol["global_batch"], protocol["per_process_batch"]) == (2, 2, 1)
    group, metric = HEADLINE[task]
    value = record["metrics"][group][metric]
    assert math.isfinite(value) and 0 <= value <= 100
    assert sorted(p.name for p in directory.glob("*.json")) == ["result.json", "run.json"]
    assert record["opts"] == list(SHORTER[framework])  # applied by the framework: 4 iterations
    resolved = (directory / "config.yaml").read_text()
    assert ("MAX_ITER: 4" if framework == "detectron2" else "max_iters=4") in resolved
    if framework == "detectron2":  # precise BN combined over the ranks: both evaluate with the same BN buffers
        logs = [(directory / "work" / name).read_text() for name in ("log.txt", "log.txt.rank1")]
        digests = [re.search(r"precise BN: .* on each of 2 rank\(s\), combined over the ranks; buffers (\w+)", log)
                   for log in logs]
        assert all(digests) and digests[0].group(1) == digests[1].group(1), [d and d.group(0) for d in digests]


@pytest.mark.slow
def test_resume_under_another_process_count_is_refused_and_overrides_are_another_run(two_process_runs, tmp_path):
    finished = two_process_run_dir(two_process_runs, "coco", "detectron2")
    assert (finished / "work" / "last_checkpoint").is_file()
    # an interrupted copy of the 2-process run: resuming it in 1 process would change the protocol's data order
    out = tmp_path / "bench"
    copy = out / finished.relative_to(two_process_runs["out"])
    shutil.copytree(finished, copy)
    (copy / "result.json").unlink()
    ckpt = str(two_process_runs["ckpt"])
    # refused before anything runs: in this process
    refused = run_main(benchmarks_main, ["run", "coco", "--ckpt", ckpt, "--framework", "detectron2",
                                         "--schedule", "smoke", "--device", "cpu", "--procs", "1", "--out", str(out),
                                         "--opts", *SHORTER["detectron2"]])
    assert refused.returncode == 2 and "was started in 2 process(es)" in refused.stderr, refused.stderr[-2000:]
    assert not (copy / "result.json").exists() and not (copy / "failure.json").exists()

    odd = run_main(benchmarks_main, ["run", "coco", "--ckpt", ckpt, "--framework", "mmdet", "--schedule", "smoke",
                                     "--device", "cpu", "--procs", "3", "--out", str(out)])
    assert odd.returncode == 2 and "global batch of 2 images cannot be split over 3 processes" in odd.stderr
    assert not (out / "coco" / "mmdet").exists()  # refused before anything was written

    # a wrong key fails through Detectron2's own merge_from_list, with one message
    wrong = run_main(benchmarks_main, ["run", "coco", "--ckpt", ckpt, "--framework", "detectron2", "--schedule",
                                       "smoke", "--device", "cpu", "--out", str(out), "--opts", "SOLVER.BASE_LRR=0.1"])
    assert wrong.returncode == 2 and "SOLVER.BASE_LRR" in wrong.stderr and "Traceback" not in wrong.stderr
    assert len(list(out.glob("coco/detectron2/smoke/*"))) == 1  # refused before anything was written


def _sync_bn_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from benchmarks.frameworks.cpu_distributed import convert_sync_batchnorm_for_cpu

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = convert_sync_batchnorm_for_cpu(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SyncBatchNorm(4)))
    images = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    mine = images[:2] if rank == 0 else images[2:3]  # unequal batches: 2 images and 1
    output = model(mine)
    # a loss that depends on the normalised outputs (the sum of their squares would not: it is constant)
    weights = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    (output * (weights[:2] if rank == 0 else weights[2:3])).sum().backward()
    torch.save({"output": output.detach(), "grad": model[0].weight.grad, "mean": model[1].running_mean,
                "var": model[1].running_var}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_processes_share_the_cores_they_are_bound_to_not_the_machines():
    """Under SLURM's CPU binding (or taskset, or a container's cpuset) a process may use fewer cores than the
    machine has: that is what the CPU processes of a run divide among themselves."""
    from pretrain.distributed import usable_cores

    bound = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(bound)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, bound)
    assert usable_cores() == len(bound)


def test_cpu_sync_batchnorm_matches_one_batch_norm_over_all_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_sync_bn_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    parts = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    images = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    output = reference(images[:3])  # the 3 images the two processes hold together
    (output * torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(2))[:3]).sum().backward()
    torch.testing.assert_close(torch.cat([parts[0]["output"], parts[1]["output"]]), output.detach())
    # DDP would average the gradients over processes; the sum of the local ones is the full gradient
    torch.testing.assert_close(parts[0]["grad"] + parts[1]["grad"], reference[0].weight.grad, rtol=1e-4, atol=1e-5)
    for part in parts:
        torch.testing.assert_close(part["mean"], reference[1].running_mean)
        torch.testing.assert_close(part["var"], reference[1].running_var)


def _detectron2_groups(spec: RunSpec) -> TrainResult:
    from detectron2.utils import comm

    return TrainResult("", {"comm": {"rank": comm.get_rank(), "world": comm.get_world_size(),
                                     "local_rank": comm.get_local_rank(), "local_size": comm.get_local_size()}})


def _one_task_of_two_nodes(rank: int, port: int, out: str) -> None:
    """A process as torchrun (or a SLURM task of a 2-node x 1-GPU job) starts it: its own node's only rank."""
    import torch.distributed as dist

    from benchmarks.launch import run_in_processes

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    spec = RunSpec("smoke", Path(out), {}, Path(out), Path(out), 0, "cpu", 2)
    result = run_in_processes(_detectron2_groups, spec, "detectron2", Path(out) / "unused.json")
    Path(out, f"rank{rank}.json").write_text(json.dumps(result.metrics["comm"]))
    dist.destroy_process_group()


def test_detectron2_under_torchrun_joins_its_per_machine_group(tmp_path):
    """Started by torchrun or a multi-node SLURM job, not by Detectron2's launch(): each process also makes
    the group of its own machine's processes, which Detectron2 reads for the GPU (DDP's device_ids)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_one_task_of_two_nodes, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        groups = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert groups == {"rank": rank, "world": 2, "local_rank": 0, "local_size": 1}


def test_a_finished_program_ends_with_its_code_after_its_exit_work(tmp_path):
    """`exit_now` (the CLIs' and the benchmark workers' end): the other non-daemon threads finish, the atexit
    handlers run and buffered output comes out, and the exit status is the program's; only the interpreter's
    module teardown is left out."""
    program = f"""
import atexit, sys, threading, time
from pretrain.process_exit import exit_now
atexit.register(lambda: open({str(tmp_path / "atexit")!r}, "w").write("ran"))
def late():
    time.sleep(0.3)
    open({str(tmp_path / "thread")!r}, "w").write("done")
threading.Thread(target=late).start()
sys.stdout.write("no newline: still in the buffer")
exit_now(3)
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and result.stdout == "no newline: still in the buffer", result
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_a_programs_imports_run_without_cyclic_collections_and_are_frozen_after():
    """`imports_without_collection` (the start of `pretrain train` and `benchmarks run`): no full collection
    scans the libraries while they are imported; after the block the collector is on again (also after an
    error) and what the block left alive is frozen."""
    import gc

    from pretrain.collector import imports_without_collection

    class Node:  # an object in a reference cycle: only the cyclic collector frees it
        pass

    gc.unfreeze()
    with imports_without_collection():
        assert not gc.isenabled()
        kept = Node()
        kept.self = kept
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: out of the collector's lists
    gc.unfreeze()
    with pytest.raises(RuntimeError), imports_without_collection():
        raise RuntimeError("an import failed")
    assert gc.isenabled()
    gc.disable()  # a program that runs without the collector keeps it off
    try:
        with imports_without_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
