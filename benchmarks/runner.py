"""The shared benchmark runner: one run directory per (task, framework, schedule, checkpoint, overrides, seed).

A run directory holds the converted weights (`weights/`), the framework's resolved config
(`config.yaml`), `run.json` (what ran, on what, with which versions, in how many processes), the
framework's own logs, checkpoints and outputs (`work/`), and finally `result.json`. A run whose
`result.json` says finished is skipped; an unfinished one resumes from the framework's last checkpoint
(with the same number of processes only); a failed one records `failure.json` and never touches the
results of other runs. `run_benchmark` is four steps: resolve the run, prepare the weights, train and
evaluate (in 1 or N processes, `benchmarks.launch`), record.
"""

from __future__ import annotations

import hashlib
import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.launch import run_in_processes
from benchmarks.registry import Benchmark
from benchmarks.spec import RunSpec, TrainResult, split_opts
from benchmarks.tasks import get_benchmark
from pretrain.checkpoint import utc_now
from pretrain.distributed import barrier, init_distributed, is_main_process, launched_world_size
from pretrain.errors import UserError
from pretrain.files import atomic_write_json, atomic_write_text, read_json
from transfer.export import check_exportable, export, source_summary
from transfer.named import resolve_checkpoint
from transfer.source import SourceBackbone, read_backbone


def framework_version(framework: str) -> str:
    import importlib.metadata as metadata

    packages = {"detectron2": "sal-detectron2", "mmdet": "mmdet", "mmseg": "mmsegmentation", "frozen": "torch"}
    return metadata.version(packages[framework])


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cuda or cpu, got '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU on this machine")
    return device


def opts_suffix(opts: tuple[str, ...]) -> str:
    """Runs with other overrides are other runs: their directory (and table row) carries this suffix."""
    if not opts:
        return ""
    return "-opts" + hashlib.sha256("\n".join(opts).encode()).hexdigest()[:8]


def check_data(benchmark: Benchmark, data_root: Path) -> None:
    """A dataset root missing what the benchmark reads is refused, naming what is missing."""
    missing = [name for name in benchmark.required_files if not (data_root / name).exists()]
    if missing:
        raise UserError(f"{benchmark.name} data not found under {data_root}: missing {', '.join(missing)}")


def run_directory(out: str | Path, task: str, framework: str, schedule: str, ckpt: str | Path, seed: int,
                  opts: tuple[str, ...] = ()) -> Path:
    """Where a run lives: its identity is (task, framework, schedule, checkpoint, overrides, seed)."""
    return (Path(out) / task / framework / schedule / (Path(ckpt).name.split(".")[0] + opts_suffix(tuple(opts)))
            / f"seed{seed}")


def run_state(run_dir: Path) -> str:
    """finished, failed, unfinished (started, neither finished nor failed: running or interrupted) or new."""
    if (read_json(run_dir / "result.json") or {}).get("status") == "finished":
        return "finished"
    if (run_dir / "failure.json").is_file():
        return "failed"
    return "unfinished" if (run_dir / "run.json").is_file() else "new"


def choose_schedule(benchmark: Benchmark, schedule: str | None, data: str | Path | None) -> tuple[str, str]:
    """(schedule, why): the one named; else, on the user's data, the real protocol its published reference
    uses; else, on the embedded data, the smoke schedule."""
    if schedule is not None:
        if data is not None and schedule in benchmark.embedded_schedules and benchmark.real_schedules:
            return schedule, (f"asked for by name, on the data under {data}: a {schedule} run, not a benchmark "
                              f"result, and its table row says {schedule}")
        return schedule, "asked for by name"
    if not benchmark.real_schedules:
        return benchmark.schedules[0], f"the one schedule of {benchmark.name}, for any data"
    if data is not None:
        return benchmark.protocol_schedule, (
            "the real protocol, because the data is given and no schedule is named; SCHEDULE= or --schedule names "
            f"another of {', '.join(benchmark.schedules)}")
    return benchmark.embedded_schedule, ("the embedded data, because no data is given; DATA= or --data runs the "
                                         f"real protocol, {benchmark.protocol_schedule}")


@dataclass(frozen=True)
class Plan:
    """A resolved run: what it is, where it lives, and how many processes train it."""

    task: Benchmark
    schedule: str
    seed: int
    ckpt: Path
    data: Path | None  # None: the embedded data
    data_root: Path
    run_dir: Path
    device: str
    world_size: int
    opts: tuple[str, ...]
    protocol: dict[str, Any] = field(default_factory=dict)  # global / per-process batch, lr, length
    schedule_reason: str = ""  # why this schedule: named, or chosen by the data (choose_schedule)

    @property
    def finished(self) -> bool:
        return run_state(self.run_dir) == "finished"


def resolve_run(task: str, ckpt: str | Path, framework: str, schedule: str | None, seed: int = 0,
                data: str | Path | None = None, out: str | Path = "runs/bench", procs: int = 1,
                device: str = "auto", opts: tuple[str, ...] | list[str] = ()) -> Plan:
    """Check everything that can refuse the run, before anything is written. `schedule` None: chosen by the
    data (`choose_schedule`)."""
    spec = get_benchmark(task, framework)
    named = schedule is not None
    schedule, reason = choose_schedule(spec, schedule, data)
    if schedule not in spec.schedules:
        raise UserError(f"unknown schedule '{schedule}' for {task}; choose from {', '.join(spec.schedules)}")
    opts = tuple(opts)
    split_opts(opts)
    if opts and spec.check_opts is not None:
        spec.check_opts(opts)
    elif opts and not spec.converts:
        raise UserError(f"--opts: the {task} benchmark has no framework config to override")
    device = pick_device(device)
    torchrun = launched_world_size()
    if torchrun > 1:
        if procs > 1:
            raise UserError("under torchrun, leave out --procs: torchrun started the processes")
        procs = torchrun
    if procs < 1:
        raise UserError(f"--procs must be at least 1, got {procs}")
    if not spec.multi_process and procs > 1:
        raise UserError(f"the {task} benchmark runs in one process; leave out --procs")
    if device == "cuda" and torchrun <= 1:
        import torch

        if procs > torch.cuda.device_count():
            raise UserError(f"--procs {procs}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    try:
        protocol = {} if spec.check_protocol is None else spec.check_protocol(schedule, opts, procs)
    except UserError as e:
        if named:
            raise
        raise UserError(f"{e} (schedule {schedule}: {reason})") from None  # say why it is this schedule
    ckpt = resolve_checkpoint(ckpt)  # a released checkpoint's name is its file in torch's hub cache
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    if data is None:
        if schedule not in spec.embedded_schedules:
            raise UserError(f"--data is required for the {schedule} schedule (the real dataset's folder)")
        data_root = spec.embedded_data()
    else:
        data_root = Path(data)
        check_data(spec, data_root)
    run_dir = run_directory(out, task, framework, schedule, ckpt, seed, opts)
    plan = Plan(spec, schedule, seed, ckpt, None if data is None else Path(data), data_root, run_dir, device,
                procs, opts, protocol, reason)
    _check_resume(plan)
    return plan


def describe_plan(plan: Plan) -> str:
    """One line: the task, the schedule and why, the protocol as it will run, the data and the run directory."""
    task = plan.task
    line = f"{task.name}/{task.framework}: schedule {plan.schedule} ({plan.schedule_reason})"
    if plan.protocol:
        p = plan.protocol
        line += (f"; {plan.world_size} process(es) x {p['per_process_batch']} images = global batch "
                 f"{p['global_batch']}, lr {p['lr']:g}, {p['length']}")
    where = "the embedded data" if plan.data is None else str(plan.data)
    return f"{line}; data: {where}; device {plan.device}; run directory {plan.run_dir.parent}"


def _check_resume(plan: Plan) -> None:
    """An unfinished run resumes only in as many processes as it started with (the data order and the
    per-process batch depend on it)."""
    record = plan.run_dir / "run.json"
    if plan.finished or not record.is_file() or not (plan.run_dir / "work" / "last_checkpoint").is_file():
        return
    started = json.loads(record.read_text()).get("world_size", 1)
    if started != plan.world_size:
        raise UserError(f"{plan.run_dir} was started in {started} process(es) and has a checkpoint; resuming it in "
                        f"{plan.world_size} would change its data order and per-process batch. Rerun with "
                        f"--procs {started}, or use another --out for a new run")


def prepare_weights(plan: Plan, backbone: SourceBackbone) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(weights file, framework settings, source summary): converted and verified once, by rank 0."""
    framework = plan.task.framework
    if not plan.task.converts:
        return plan.ckpt.resolve(), {}, source_summary(backbone)
    sidecar = plan.run_dir / "weights" / f"{plan.ckpt.name.split('.')[0]}.transfer.json"
    if is_main_process():
        record = export(backbone, [framework], plan.run_dir / "weights", verify=True)
    barrier()  # the other processes of a torchrun start read what rank 0 wrote
    if not is_main_process():
        record = json.loads(sidecar.read_text())
    target = record["targets"][framework]
    return plan.run_dir / "weights" / target["file"], target["settings"], record["source"]


def _provenance(plan: Plan, source: dict[str, Any], seeds_asked: int) -> dict[str, Any]:
    task = plan.task
    return {
        "task": task.name, "framework": task.framework, "framework_version": framework_version(task.framework),
        "schedule": plan.schedule, "schedule_reason": plan.schedule_reason, "seed": plan.seed,
        "seeds_asked": seeds_asked, "data": str(plan.data_root.resolve()),
        "embedded_data": plan.data is None, "checkpoint": str(plan.ckpt.resolve()),
        "checkpoint_sha256": source["sha256"], "method": source["method"], "arch": source["arch"],
        "recipe": source["recipe"], "pretrain_seed": source.get("pretrain_seed"), "device": plan.device,
        "world_size": plan.world_size, "opts": list(plan.opts),
        "started": utc_now(),
    }


def _fail(plan: Plan, provenance: dict[str, Any], error: str, summary: str, **extra: Any) -> UserError:
    """Record `error` in failure.json; the UserError says `summary` and where the record is."""
    atomic_write_json(plan.run_dir / "failure.json", {**provenance, "status": "failed", "error": error, **extra})
    return UserError(f"{plan.task.name}/{plan.task.framework}/{plan.schedule} {summary} "
                     f"(recorded in {plan.run_dir / 'failure.json'})")


def record(plan: Plan, provenance: dict[str, Any], result: TrainResult) -> None:
    """Write the resolved config and `result.json`; a non-finite headline metric is a failure."""
    atomic_write_text(plan.run_dir / "config.yaml", result.resolved)
    provenance = {**provenance, "config_sha256": hashlib.sha256(result.resolved.encode()).hexdigest(),
                  "protocol": result.protocol}
    # A size bucket without objects is NaN in COCO's own report; a NaN loss raises during training.
    # What must be finite is each task's headline number.
    headline = [result.metrics.get(group, {}).get(name) for group, name in plan.task.required]
    if any(v is None or not math.isfinite(v) for v in headline):
        raise _fail(plan, provenance, "non-finite metrics", "produced non-finite metrics (diverged?)",
                    metrics=result.metrics)
    atomic_write_json(plan.run_dir / "result.json",
                      {**provenance, "status": "finished", "finished": utc_now(), "metrics": result.metrics})


def run_benchmark(task: str, ckpt: str | Path, framework: str, schedule: str | None, seed: int = 0,
                  data: str | Path | None = None, out: str | Path = "runs/bench", procs: int = 1,
                  device: str = "auto", opts: tuple[str, ...] | list[str] = (), seeds_asked: int = 1) -> Path:
    """Run (or skip, or resume) one benchmark in `procs` processes; returns its run directory.

    `seeds_asked`: how many seeds the user asked for this row (the table says "3/5 seeds" until all finish).
    Under `torchrun` (mmdet / mmseg) every process calls this; only rank 0 writes the run's records."""
    plan = resolve_run(task, ckpt, framework, schedule, seed, data, out, procs, device, opts)
    if launched_world_size() > 1:  # under torchrun: join the group now, so that rank 0 converts alone
        init_distributed(plan.device)
    if plan.finished:
        if is_main_process():
            protocol = json.loads((plan.run_dir / "result.json").read_text()).get("protocol") or {}
            ran_in = protocol.get("world_size", 1)
            print(f"already finished (in {ran_in} process(es); the protocol is the same in any number), not run "
                  f"again: {plan.run_dir / 'result.json'}. Another seed (--seed) or --out makes a new run.")
        return plan.run_dir
    backbone = read_backbone(plan.ckpt)  # an unreadable checkpoint is refused before anything is written
    if plan.task.converts:
        check_exportable(backbone, [framework])
    main = is_main_process()
    if main:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    weights, settings, source = prepare_weights(plan, backbone)
    provenance = _provenance(plan, source, seeds_asked)
    if main:
        atomic_write_json(plan.run_dir / "run.json", provenance)
        (plan.run_dir / "failure.json").unlink(missing_ok=True)
    spec = RunSpec(plan.schedule, weights, settings, plan.data_root, plan.run_dir / "work", plan.seed, plan.device,
                   plan.world_size, plan.opts)
    try:
        result = run_in_processes(plan.task.run, spec, framework, plan.run_dir / "work" / "final_result.json")
    except UserError:
        raise
    except Exception as e:
        if not main:
            raise
        error = f"{type(e).__name__}: {e}"
        raise _fail(plan, provenance, error, f"failed: {error}", traceback=traceback.format_exc()) from None
    if main:
        record(plan, provenance, result)
    return plan.run_dir
