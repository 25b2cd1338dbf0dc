"""SLURM through submitit, shared by `python -m pretrain submit` and `python -m benchmarks sweep`.

submitit is imported only where it is used: its import configures logging (`logging.config.dictConfig`),
which closes every logging handler already open in the process, so a command imports it before any
framework opens its log files.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pretrain.errors import UserError

T = TypeVar("T")

# our name -> submitit's AutoExecutor parameter
SLURM_KEYS = {"partition": "slurm_partition", "time_min": "timeout_min", "account": "slurm_account",
              "constraint": "slurm_constraint", "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb",
              "qos": "slurm_qos", "comment": "slurm_comment"}
SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: time to requeue
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # a job of submitit's local executor is never timed out


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The SLURM resources a command line may set (over a file's `slurm:` section, where there is one)."""
    parser.add_argument("--partition")
    parser.add_argument("--time-min", type=int,
                        help="SLURM time limit per job, minutes (a timed-out job is requeued and resumes)")
    parser.add_argument("--account")
    parser.add_argument("--constraint")
    parser.add_argument("--cpus-per-task", type=int)
    parser.add_argument("--mem-gb", type=int)
    parser.add_argument("--qos")


def slurm_resources(args: argparse.Namespace) -> dict[str, Any]:
    """The resources given on the command line (None for those left out)."""
    return {key: getattr(args, key) for key in SLURM_KEYS if hasattr(args, key)}


def slurm_executor(folder: Path, name: str, nodes: int, tasks_per_node: int, gpus_per_node: int,
                   resources: dict[str, Any]):
    """submitit's SLURM executor; `resources` uses SLURM_KEYS' names (None values are left out)."""
    import submitit

    unknown = sorted(set(resources) - set(SLURM_KEYS))
    if unknown:
        raise UserError(f"unknown SLURM resource(s) {', '.join(unknown)}; allowed: {', '.join(SLURM_KEYS)}")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as e:  # no srun on this machine
        raise UserError(f"--executor slurm: {e} (submit from the cluster's login node)") from None
    executor.update_parameters(name=name, nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
                               slurm_signal_delay_s=SIGNAL_DELAY_S,
                               **{SLURM_KEYS[k]: v for k, v in resources.items() if v is not None})
    return executor


def export_torchrun_environment() -> None:
    """In one task of a submitit job (one task per GPU, on one node or many): set what torchrun would (RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR = the job's first node, MASTER_PORT). Every task
    keeps seeing all of its node's GPUs: the code picks its own by LOCAL_RANK."""
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def run_task(work: Callable[[], T], *, one_rank: bool = False) -> T:
    """One task of a job: `work()` (with `one_rank`, as one rank of the job's tasks: torchrun's environment is
    exported first), except that when submitit's signal handler ends the task for a requeue (SystemExit from
    USR2 or a preemption), the process exits at once with that code. The interpreter's own exit would free the
    DDP model after the process group, and torch's gloo group can deadlock there with its worker thread over
    the GIL (seen: rank 0 of a 2-task job hung at exit, so the job, which is requeued once every task has
    exited, never was). The processes this task started (a one-node run's ranks) end with it, so that none
    trains on beside the requeued job; logs are flushed first."""
    if one_rank:
        export_torchrun_environment()
    try:
        return work()
    except SystemExit as e:
        children = multiprocessing.active_children()
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=30)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code if isinstance(e.code, int) else 1)


def job_error(error: BaseException) -> str:
    """The one line that says why a submitit job failed: the last line of the job's own traceback (submitit
    wraps it between dashed lines, followed by where the logs are)."""
    text = str(error)
    parts = text.split("-" * 22)
    trace = parts[1] if len(parts) >= 3 else text
    last = next((line.strip() for line in reversed(trace.splitlines()) if line.strip()), text.strip())
    kind, sep, message = last.partition(": ")
    # `pretrain.errors.UserError: message` -> `message`: the job's own one-line report
    return message if sep and kind.startswith("pretrain.errors.") else last
