"""`python -m pretrain submit`: one pretraining run as a submitit job, on SLURM or on this machine.

The job is `nodes x nproc_per_node` tasks, one per GPU. Every task exports what torchrun would
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR = the first node, MASTER_PORT) and runs
the same trainer as `python -m pretrain train`, so one node or many is the same code path. Preempted or
timed out, the job is requeued (submitit calls `PretrainJob.checkpoint` on SIGUSR2) and the trainer
resumes from `<run dir>/checkpoints/last.pt`; set `train.save_every_steps` so that an ImageNet epoch
does not have to start over.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pretrain.config import Config
from pretrain.errors import UserError
from pretrain.slurm import LOCAL_TIMEOUT_MIN, run_task, slurm_executor


def with_absolute_paths(config: Config) -> Config:
    """The config with its paths made absolute: a job may start in another directory than the submission."""
    def absolute(value: str | None) -> str | None:
        return None if value is None else str(Path(value).resolve())

    config = dataclasses.replace(config)
    config.out_dir = str(config.run_dir().resolve())
    config.data = dataclasses.replace(config.data, root=absolute(config.data.root),
                                      coarse_map=absolute(config.data.coarse_map),
                                      generated_dir=absolute(config.data.generated_dir))
    config.monitor = dataclasses.replace(config.monitor, val_root=absolute(config.monitor.val_root))
    return config


class PretrainJob:
    """One task of the job: torchrun's environment from submitit's, then the trainer."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> str:
        from pretrain.trainer import train

        return str(run_task(lambda: train(self.config), one_rank=True))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainJob(self.config))


def build_executor(config: Config, executor: str, nodes: int, nproc_per_node: int,
                   resources: dict[str, Any] | None = None):
    """submitit's executor for this run; its logs go to `<run dir>/submitit/<job id>/`."""
    import submitit

    world = nodes * nproc_per_node
    if nodes < 1 or nproc_per_node < 1:
        raise UserError("--nodes and --nproc-per-node must be at least 1")
    if config.train.batch_size % world:
        raise UserError(f"train.batch_size {config.train.batch_size} is not divisible by {world} processes "
                        f"({nodes} node(s) x {nproc_per_node})")
    folder = config.run_dir() / "submitit" / "%j"
    gpus = 0 if config.train.device == "cpu" else nproc_per_node
    if executor == "slurm":
        return slurm_executor(folder, f"pretrain-{config.name}", nodes, nproc_per_node, gpus, resources or {})
    if executor != "local":
        raise UserError(f"--executor must be local or slurm, got '{executor}'")
    if nodes != 1:
        raise UserError("--executor local runs on this machine: --nodes must be 1")
    local = submitit.LocalExecutor(folder=folder)
    local.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=nproc_per_node, gpus_per_node=gpus)
    return local


def check_paths(config: Config) -> None:
    """What would fail at once in the job, refused before it waits in a queue."""
    from pretrain.knn_monitor import held_out_root

    folders = {"data.root": config.data.root}
    # the generated data (no data.root) and its held-out split are written by the job itself
    if config.monitor.knn_every_epochs > 0 and (config.data.root or config.monitor.val_root):
        folders["monitor.val_root"] = held_out_root(config)  # refuses real data without a held-out folder
    for key, folder in folders.items():
        if folder is not None and not Path(folder).is_dir():
            raise UserError(f"{key}: dataset folder not found: {folder}")
    if config.data.coarse_map is not None and not Path(config.data.coarse_map).is_file():
        raise UserError(f"coarse map not found: {config.data.coarse_map}")


def submit(config: Config, executor: str, nodes: int = 1, nproc_per_node: int = 1,
           resources: dict[str, Any] | None = None):
    """Submit the run; returns submitit's job (not waited for)."""
    config = with_absolute_paths(config)
    check_paths(config)
    return build_executor(config, executor, nodes, nproc_per_node, resources).submit(PretrainJob(config))
