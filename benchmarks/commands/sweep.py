"""Sweeps: checkpoints × benchmarks × seeds from one YAML file, run here or on SLURM through submitit.

    python -m benchmarks sweep FILE [--dry-run] [--executor local|slurm] [--parallel N]
    python -m benchmarks status FILE

A sweep file names checkpoints (paths or globs), benchmarks (task, framework, and optionally schedule, data,
seeds, gpus, nodes, opts; the schedule follows the data as in `benchmarks run`), defaults for seeds / gpus /
nodes / device, and the SLURM resources. Each cell of the grid is one ordinary run directory of `benchmarks
run` (same identity, same resume), so a sweep adds no state of its own: `status` and `--dry-run` read the run
directories, and rerunning a sweep runs only what is not finished. Every run is a submitit job
(`BenchmarkJob`): on SLURM, preempted or timed out, it is requeued and resumes from the framework's last
checkpoint in its run directory; locally, submitit's own LocalExecutor runs the same code path in real
processes, N at a time (one GPU set each; CPU runs in N lanes, each lane one process that runs its runs one
after the other: `BenchmarkLane`). A run on one node is one task that starts its own processes (as `benchmarks
run --procs`); a run over `nodes` > 1 (SLURM only) is one task per GPU with torchrun's environment, so that
each task is one rank.

submitit is imported only where it is used, before any framework opens a log file (pretrain/slurm.py
says why).
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.environ import temporary_environ
from benchmarks.runner import check_data, choose_schedule, run_directory, run_state
from benchmarks.tasks import get_benchmark
from pretrain.config import load_yaml
from pretrain.distributed import usable_cores
from pretrain.errors import UserError
from pretrain.slurm import LOCAL_TIMEOUT_MIN, SLURM_KEYS, job_error, run_task
from transfer.named import release_url, resolve_checkpoint

TOP_KEYS = {"name", "out", "checkpoints", "benchmarks", "seeds", "gpus", "nodes", "device", "opts", "slurm"}
BENCHMARK_KEYS = {"task", "framework", "schedule", "data", "seeds", "gpus", "nodes", "opts"}


@dataclass(frozen=True)
class SweepRun:
    """One cell of the grid: exactly the arguments of one `benchmarks run`."""

    task: str
    framework: str
    schedule: str
    ckpt: Path
    seed: int
    seeds_asked: int
    data: Path | None
    gpus: int  # per node
    device: str
    opts: tuple[str, ...]
    out: Path
    nodes: int = 1

    @property
    def run_dir(self) -> Path:
        return run_directory(self.out, self.task, self.framework, self.schedule, self.ckpt, self.seed, self.opts)

    @property
    def label(self) -> str:
        return f"{self.task}:{self.framework}:{self.schedule} {self.ckpt.name.split('.')[0]} seed {self.seed}"


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: list[SweepRun]
    slurm: dict[str, Any] = field(default_factory=dict)
    out: Path = Path("runs/bench")


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _checkpoints(patterns: list[str], base: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        if release_url(pattern):  # a released checkpoint's name: its file in torch's hub cache
            found.append(resolve_checkpoint(pattern))
            continue
        path = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(Path(p) for p in glob.glob(path))
        if not matches:
            raise UserError(f"sweep checkpoints: nothing matches '{pattern}'")
        found += [m for m in matches if m not in found]
    return found


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; relative paths in it are relative to the current directory."""
    path = Path(path)
    spec = load_yaml(path)
    _check_keys(str(path), spec, TOP_KEYS)
    for required in ("checkpoints", "benchmarks"):
        if not spec.get(required):
            raise UserError(f"{path}: '{required}' is missing or empty")
    _check_keys(f"{path}: slurm", spec.get("slurm") or {}, set(SLURM_KEYS))
    out = Path(spec.get("out", "runs/bench"))
    checkpoints = _checkpoints(list(spec["checkpoints"]), Path.cwd())
    runs = []
    for index, entry in enumerate(spec["benchmarks"]):
        where = f"{path}: benchmarks[{index}]"
        if not isinstance(entry, dict) or "task" not in entry:
            raise UserError(f"{where}: each benchmark is a mapping with at least 'task'")
        _check_keys(where, entry, BENCHMARK_KEYS)
        benchmark = get_benchmark(entry["task"], entry.get("framework", "detectron2"))
        data = Path(entry["data"]) if entry.get("data") else None
        # as `benchmarks run`: without a schedule, the data's (the real protocol on data, else smoke)
        schedule, _ = choose_schedule(benchmark, str(entry["schedule"]) if entry.get("schedule") else None, data)
        if schedule not in benchmark.schedules:
            raise UserError(f"{where}: unknown schedule '{schedule}' for {benchmark.name}; choose from "
                            f"{', '.join(benchmark.schedules)}")
        if data is None and schedule not in benchmark.embedded_schedules:
            raise UserError(f"{where}: 'data' is required for the {schedule} schedule (the real dataset's folder)")
        if data is not None:
            check_data(benchmark, data)
        seeds = int(entry.get("seeds") or spec.get("seeds") or benchmark.default_seeds)
        gpus = 1 if not benchmark.multi_process else int(entry.get("gpus") or spec.get("gpus") or 1)
        nodes = 1 if not benchmark.multi_process else int(entry.get("nodes") or spec.get("nodes") or 1)
        if gpus < 1 or nodes < 1:
            raise UserError(f"{where}: gpus and nodes must be at least 1")
        opts = tuple(spec.get("opts") or ()) + tuple(entry.get("opts") or ())
        if benchmark.check_protocol is not None:  # bad overrides or a batch that does not split: refused now
            try:
                benchmark.check_protocol(schedule, opts, nodes * gpus)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
        for ckpt in checkpoints:
            for seed in range(seeds):
                runs.append(SweepRun(benchmark.name, benchmark.framework, schedule, ckpt, seed, seeds, data, gpus,
                                     str(spec.get("device", "auto")), opts, out, nodes))
    return Sweep(str(spec.get("name") or path.stem), runs, dict(spec.get("slurm") or {}), out)


def grid_table(sweep: Sweep) -> str:
    """One line per run: its state and run directory, then the counts."""
    states = [run_state(run.run_dir) for run in sweep.runs]
    width = max(len(run.label) for run in sweep.runs)
    lines = [f"{'state':10s}  {'run':{width}s}  run directory"]
    lines += [f"{state:10s}  {run.label:{width}s}  {run.run_dir}" for run, state in zip(sweep.runs, states,
                                                                                         strict=True)]
    counts = {s: states.count(s) for s in ("finished", "unfinished", "failed", "new") if states.count(s)}
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def to_run(sweep: Sweep) -> list[SweepRun]:
    """What a (re)submission runs: everything not finished (failed and interrupted runs resume)."""
    return [run for run in sweep.runs if run_state(run.run_dir) != "finished"]


class BenchmarkJob:
    """One run as a submitit job. `checkpoint` is submitit's hook on preemption and time-out: it resubmits
    the same job, which resumes from the framework's last checkpoint in the run directory."""

    def __init__(self, run: SweepRun) -> None:
        self.run = run

    def __call__(self) -> str:
        from benchmarks.runner import run_benchmark

        r = self.run
        one_rank = r.nodes > 1  # one task per GPU over several nodes; on one node, one task starts them all
        procs = 1 if one_rank else r.gpus
        return str(run_task(lambda: run_benchmark(r.task, r.ckpt, r.framework, r.schedule, r.seed, r.data, r.out,
                                                  procs, r.device, r.opts, seeds_asked=r.seeds_asked),
                            one_rank=one_rank))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(BenchmarkJob(self.run))


def slurm_executor(sweep: Sweep, folder: Path, gpus: int, nodes: int, overrides: dict[str, Any]):
    """submitit's SLURM executor for runs of `nodes` x `gpus` GPUs (one node: one task that starts its own
    processes; several: one task per GPU), with the sweep file's `slurm` resources, overridden by the
    command line's."""
    from pretrain.slurm import slurm_executor as executor_for

    resources = {**sweep.slurm, **{k: v for k, v in overrides.items() if v is not None}}
    tasks = 1 if nodes == 1 else gpus
    if resources.get("cpus_per_task") and tasks > 1:  # the sweep's figure is one run's CPUs per node
        resources["cpus_per_task"] = max(1, int(resources["cpus_per_task"]) // tasks)
    return executor_for(folder, f"bench-{sweep.name}", nodes=nodes, tasks_per_node=tasks, gpus_per_node=gpus,
                        resources=resources)


def submit_slurm(sweep: Sweep, runs: list[SweepRun], overrides: dict[str, Any]) -> list[str]:
    """Submit every run (grouped by nodes and GPUs per node); returns the job ids. Does not wait."""
    ids = []
    folder = sweep.out / "sweeps" / sweep.name / "%j"
    for nodes, gpus in sorted({(run.nodes, run.gpus) for run in runs}):
        executor = slurm_executor(sweep, folder, gpus, nodes, overrides)
        jobs = [executor.submit(BenchmarkJob(run)) for run in runs if (run.nodes, run.gpus) == (nodes, gpus)]
        ids += [job.job_id for job in jobs]
    return ids


class BenchmarkLane:
    """Local CPU runs one after the other in one job: a fresh process costs 5-6 s of imports and framework
    set-up before it trains, so `--parallel N` CPU runs go in N lanes, each one process (the same runs as
    `benchmarks run` with several tasks in one process). A run that fails is reported (and recorded in its
    failure.json if it got as far as starting), and the lane goes on with the next."""

    def __init__(self, runs: list[SweepRun]) -> None:
        self.runs = runs

    def __call__(self) -> list[str | None]:
        """Per run: None if it finished, else the one line that says why not."""
        import traceback

        outcomes: list[str | None] = []
        for run in self.runs:
            print(f"start  {run.label}  ({run.run_dir})", flush=True)
            try:
                BenchmarkJob(run)()
                outcomes.append(None)
            except Exception as e:  # noqa: BLE001 - the next run goes on; this one's error is returned
                traceback.print_exc()
                lines = [line for line in str(e).strip().splitlines() if line.strip()] or [""]
                outcomes.append(lines[-1] if isinstance(e, UserError) else f"{type(e).__name__}: {lines[-1]}")
        return outcomes


def run_local(sweep: Sweep, runs: list[SweepRun], parallel: int = 1, poll_s: float = 2.0) -> list[tuple[SweepRun, str]]:
    """Run `runs` through submitit's LocalExecutor, `parallel` at a time; each CUDA run gets its own GPUs, and
    CPU runs go in `parallel` lanes (`BenchmarkLane`). Returns the failures (run, last line of its error); the
    others finished."""
    import submitit
    import torch

    several = sorted({run.label for run in runs if run.nodes > 1})
    if several:
        raise UserError(f"--executor local runs on this machine: {len(several)} run(s) ask for several nodes "
                        f"(e.g. {several[0]}); use --executor slurm")
    gpus_free = list(range(torch.cuda.device_count()))
    has_cuda = bool(gpus_free)

    def on_cuda(run: SweepRun) -> bool:
        return run.device == "cuda" or (run.device == "auto" and has_cuda)

    cpu_runs = [run for run in runs if not on_cuda(run)]
    lanes = min(max(1, parallel), len(cpu_runs))
    pending: list[SweepRun | BenchmarkLane] = [BenchmarkLane(cpu_runs[i::lanes]) for i in range(lanes)]
    pending += [run for run in runs if on_cuda(run)]
    executor = submitit.LocalExecutor(folder=sweep.out / "sweeps" / sweep.name / "local" / "%j")
    running, failures, reported = {}, [], set()
    while pending or running:
        while pending and len(running) < max(1, parallel):
            unit = pending[0]
            if isinstance(unit, BenchmarkLane):
                gpus = []
                print(f"start  {len(unit.runs)} CPU run(s) in one process: "
                      f"{', '.join(run.label for run in unit.runs)}", flush=True)
                executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0, visible_gpus=())
                # CPU runs side by side share the cores (two probes, each with all cores' threads, ran 2x slower)
                with temporary_environ(OMP_NUM_THREADS=str(max(1, usable_cores() // max(1, parallel)))):
                    job = executor.submit(unit)
            else:
                if len(gpus_free) < unit.gpus and running:
                    break  # wait for GPUs to come free
                gpus = [gpus_free.pop(0) for _ in range(min(unit.gpus, len(gpus_free)))]
                executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus),
                                           visible_gpus=tuple(gpus))
                print(f"start  {unit.label}  ({unit.run_dir})", flush=True)
                job = executor.submit(BenchmarkJob(unit))
            pending.pop(0)
            running[job] = (unit, gpus)
        time.sleep(poll_s)
        for unit, _ in running.values():  # a lane's runs as they finish
            for run in getattr(unit, "runs", ()):
                if run.run_dir not in reported and run_state(run.run_dir) == "finished":
                    reported.add(run.run_dir)
                    print(f"done   {run.label}", flush=True)
        for job in [j for j in running if j.done()]:
            unit, gpus = running.pop(job)
            gpus_free += gpus
            members = unit.runs if isinstance(unit, BenchmarkLane) else [unit]
            try:
                result = job.result()
                outcomes = result if isinstance(unit, BenchmarkLane) else [None]
            except Exception as e:  # the job's own error, as submitit reports it (a lane: its process died)
                outcomes = [None if run_state(run.run_dir) == "finished" else job_error(e) for run in members]
            for run, error in zip(members, outcomes, strict=True):
                if error is None and run.run_dir not in reported:
                    print(f"done   {run.label}", flush=True)
                elif error is not None:
                    failures.append((run, error))
                    print(f"FAILED {run.label}: {error}", flush=True)
                reported.add(run.run_dir)
    return failures


def status_table(sweep: Sweep) -> str:
    """The grid's state as a table: per row of the results tables, finished / asked seeds and the states."""
    return _state_table([((run.task, run.framework, run.schedule, run.ckpt.name.split(".")[0], " ".join(run.opts)),
                          run_state(run.run_dir)) for run in sweep.runs])


def runs_status_table(runs: Path) -> str:
    """Every run directory under `runs` (no sweep file): per row of the results tables, the runs' states."""
    from benchmarks.commands.collect import gather

    frame = gather(runs)
    if frame.empty:
        return f"no benchmark runs under {runs}"
    return _state_table([((line.task, line.framework, line.schedule, line.checkpoint, line.opts), line.outcome)
                         for line in frame.itertuples()])


def _state_table(states: list[tuple[tuple[str, ...], str]]) -> str:
    from collections import Counter

    rows: dict[tuple[str, ...], Counter] = {}
    for key, state in states:
        rows.setdefault(key, Counter())[state] += 1
    lines = ["| task | framework | schedule | checkpoint | opts | finished | unfinished | failed | new |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for key, counts in rows.items():
        asked = sum(counts.values())
        lines.append("| " + " | ".join(k or "—" for k in key) + f" | {counts['finished']}/{asked} | "
                     f"{counts['unfinished']} | {counts['failed']} | {counts['new']} |")
    return "\n".join(lines)
