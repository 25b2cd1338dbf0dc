"""Run one benchmark's training in 1 or N processes and hand its result back to the runner.

Knows nothing of tasks: it gets the task's training function and the run.
- 1 process: the function runs here.
- N processes, Detectron2: Detectron2's own `launch()` (NCCL on GPUs, gloo without).
- N processes, mmengine: torch.multiprocessing with the environment `torchrun` sets (RANK, LOCAL_RANK,
  WORLD_SIZE, MASTER_ADDR/PORT); each process joins the group (NCCL or gloo) before the Runner, which
  then uses it (`launcher='pytorch'`).
- Started by `torchrun` (or a SLURM task with its environment; WORLD_SIZE set), on one machine or many: this
  process is one of them; it joins the group (Detectron2: also its per-machine group) and trains.
A CPU run with N processes (`--device cpu --procs N`) uses gloo and hides any GPU from its processes.
Rank 0 writes the result to a file that the parent reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.environ import temporary_environ
from benchmarks.spec import RunSpec, TrainResult
from pretrain.distributed import init_distributed, is_main_process, launched_world_size, leave_group, usable_cores
from pretrain.files import atomic_write_json
from pretrain.process_exit import exit_now

Train = Callable[[RunSpec], TrainResult]


def _share_cores(spec: RunSpec, processes_here: int) -> None:
    """N CPU processes on one machine's cores: its share each (one thread each on 2 cores is several times
    faster than oversubscribing them, whatever OMP_NUM_THREADS says)."""
    if spec.device == "cpu" and processes_here > 1:
        import torch

        torch.set_num_threads(max(1, usable_cores() // processes_here))


def _train_and_write(train: Train, spec: RunSpec, result_file: str) -> None:
    """A worker process's whole life after joining the group: train, rank 0 writes the result, every rank
    leaves the group, and the process ends without the interpreter's teardown (its parent waits for it)."""
    _share_cores(spec, spec.world_size)
    result = train(spec)
    if is_main_process():
        atomic_write_json(Path(result_file), asdict(result))
    leave_group()
    exit_now(0)


def _torch_worker(local_rank: int, port: int, train: Train, spec: RunSpec, result_file: str) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(spec.world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed(spec.device)
    _train_and_write(train, spec, result_file)


def _join_detectron2_machine_group() -> None:
    """What Detectron2's launch() does in each worker after joining: the group of this machine's processes
    (its samplers and local-rank helpers read it)."""
    from detectron2.utils import comm

    comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE") or launched_world_size()))
    comm.synchronize()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_processes(train: Train, spec: RunSpec, framework: str, result_file: Path) -> TrainResult:
    """Train `spec` in `spec.world_size` processes (or in this one under torchrun); rank 0's result."""
    if launched_world_size() > 1:  # started by torchrun: this is one of the processes
        _share_cores(spec, int(os.environ.get("LOCAL_WORLD_SIZE") or launched_world_size()))
        init_distributed(spec.device)
        if framework == "detectron2":
            _join_detectron2_machine_group()
        return train(spec)  # the frameworks' evaluators give every rank the metrics
    result_file.unlink(missing_ok=True)
    if spec.world_size == 1:
        return train(spec)
    # CPU processes on a GPU machine must not see the GPUs (Detectron2's launch would pick NCCL)
    with temporary_environ(CUDA_VISIBLE_DEVICES="") if spec.device == "cpu" else contextlib.nullcontext():
        if framework == "detectron2":
            from detectron2.engine import launch

            launch(_train_and_write, spec.world_size, dist_url="auto", args=(train, spec, str(result_file)))
        else:
            import torch.multiprocessing as mp

            mp.start_processes(_torch_worker, args=(_free_port(), train, spec, str(result_file)),
                               nprocs=spec.world_size, start_method="spawn")
    return TrainResult(**json.loads(result_file.read_text()))
