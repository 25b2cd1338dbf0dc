"""Run one benchmark's training in 1 or N GPU processes and hand its result back to the runner.

Detectron2 runs start their processes with Detectron2's own `launch()`; mmengine runs with
torch.multiprocessing and the environment `torchrun` would set (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR/PORT), so that the Runner initialises the process group with `launcher='pytorch'`.
A run started by `torchrun` itself (WORLD_SIZE set) trains in the current process. In every case
rank 0 writes the resolved config and the metrics to a file that the runner reads.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from pretrain.checkpoint import atomic_write_json


def is_main_process() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _train(task_key: tuple[str, str], args: tuple[Any, ...], result_file: str) -> None:
    from benchmarks.runner import TASKS

    resolved, metrics = TASKS[task_key].run(*args)
    if is_main_process():
        atomic_write_json(Path(result_file), {"resolved": resolved, "metrics": metrics})


def _torch_worker(local_rank: int, world_size: int, port: int, task_key, args, result_file: str) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _train(task_key, args, result_file)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_in_processes(task_key: tuple[str, str], gpus: int, args: tuple[Any, ...], result_file: Path
                       ) -> tuple[str, dict[str, dict[str, float]]]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: this is one of the processes
        from benchmarks.runner import TASKS

        return TASKS[task_key].run(*args)  # mmengine's evaluator gives every rank the metrics
    result_file.unlink(missing_ok=True)
    if gpus <= 1:
        _train(task_key, args, str(result_file))
    elif task_key[1] == "detectron2":
        from detectron2.engine import launch

        launch(_train, gpus, dist_url="auto", args=(task_key, args, str(result_file)))
    else:
        import torch.multiprocessing as mp

        mp.start_processes(_torch_worker, args=(gpus, _free_port(), task_key, args, str(result_file)),
                           nprocs=gpus, start_method="spawn")
    record = json.loads(result_file.read_text())
    return record["resolved"], record["metrics"]
