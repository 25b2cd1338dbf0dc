"""Does this install reproduce the literature? `python -m benchmarks reference` (`make bench-reference`) runs
the released checkpoints a protocol's published results were measured with, with the published number of
trials, and writes a table of measured mean ± std against the published value with a verdict
(benchmarks/reference.py): `results/reference_<task>.md`.

The smoke schedule runs the same pipeline on the embedded data, offline: each released checkpoint is
replaced by a random stand-in in its release's file layout, in a private hub cache under the output folder
(never torch's own), and the table goes beside the runs, not to results/. Its numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.environ import temporary_environ
from benchmarks.reference import Published, Reference, Verdict, verdict
from benchmarks.registry import Benchmark
from benchmarks.tasks import all_benchmarks, task_table
from pretrain.errors import UserError
from pretrain.files import atomic_write_text

SMOKE = "smoke"


@dataclass
class Measured:
    """One published row and what this install measured for it."""

    benchmark: Benchmark
    schedule: str  # the schedule run (the reference's, or smoke)
    reference: Reference
    published: Published
    trials_asked: int
    values: dict[str, list[float]] = field(default_factory=dict)  # column -> one value per finished trial
    errors: list[str] = field(default_factory=list)
    not_run: str = ""  # why it was not run


def _targets(task: str, framework: str | None, schedule: str | None) -> list[tuple[Benchmark, str, Reference]]:
    """(benchmark, its real schedule, that schedule's reference) for every published reference of `task`."""
    found = []
    for benchmark in all_benchmarks():
        if benchmark.name != task or (framework and benchmark.framework != framework):
            continue
        for real in benchmark.real_schedules:
            reference = benchmark.references.get(real)
            if not isinstance(reference, Reference) or not reference.published:
                continue
            if schedule in (None, SMOKE, real):
                found.append((benchmark, real, reference))
    if not found:
        known = sorted({f"{b.name}:{b.framework}:{s}" for b in all_benchmarks() for s, r in b.references.items()
                        if isinstance(r, Reference) and r.published})
        raise UserError(f"no published reference for {task}{':' + framework if framework else ''}"
                        f"{':' + schedule if schedule and schedule != SMOKE else ''}; published: {', '.join(known)}")
    if schedule == SMOKE:  # the pipeline once per benchmark: its first reference with published results
        firsts: dict[tuple[str, str], tuple[Benchmark, str, Reference]] = {}
        for target in found:
            firsts.setdefault(target[0].key, target)
        found = list(firsts.values())
    return found


def _column(benchmark: Benchmark, name: str) -> tuple[str, str]:
    return next((c.group, c.metric) for c in benchmark.columns if c.name == name)


def run_references(task: str, framework: str | None = None, schedule: str | None = None, data: str | None = None,
                   out: str | Path = "runs/bench", procs: int = 1, device: str = "auto", trials: int | None = None,
                   results: str | Path | None = None, command: str = "") -> Path:
    """Run every published reference of `task` (or one framework / schedule) and write its table."""
    from benchmarks.runner import run_benchmark
    from transfer.named import cached_path, release_url, write_stand_in

    smoke = schedule == SMOKE
    if smoke and data is not None:
        raise UserError("the smoke schedule runs on the embedded data; leave out --data")
    if not smoke and data is None:
        raise UserError(f"--data is required: the {task} dataset's folder (the smoke schedule runs without it)")
    out = Path(out) / "reference-smoke" if smoke else Path(out)
    # smoke: private caches for the stand-ins (torch's hub, Detectron2's iopath), never the user's own
    private = {"TORCH_HOME": str((out / "torch-home").resolve()), "FVCORE_CACHE": str((out / "iopath").resolve())}
    measured: list[Measured] = []
    for benchmark, real, reference in _targets(task, framework, schedule):
        for published in reference.published:
            row = Measured(benchmark, SMOKE if smoke else real, reference, published,
                           trials or (1 if smoke else published.trials))
            measured.append(row)
            try:
                if not published.ckpt or release_url(published.ckpt) is None:
                    raise UserError(f"{published.ckpt or 'no file'}: not a released checkpoint this suite fetches")
            except UserError as e:
                row.not_run = str(e)
                continue
            with temporary_environ(**(private if smoke else {})):
                stand_in = cached_path(published.ckpt)
                if smoke and not stand_in.is_file():  # each release its own random weights
                    write_stand_in(published.ckpt, stand_in, seed=zlib.crc32(published.ckpt.encode()))
                for seed in range(row.trials_asked):
                    try:
                        run_dir = run_benchmark(task, published.ckpt, benchmark.framework, row.schedule, seed, data,
                                                out, procs, device, seeds_asked=row.trials_asked)
                    except UserError as e:
                        row.errors.append(f"seed {seed}: {e}")
                        continue
                    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
                    for name in published.metrics:
                        group, metric = _column(benchmark, name)
                        row.values.setdefault(name, []).append(float(metrics[group][metric]))
    table = Path(results) if results else (out if smoke else Path("results"))
    path = table / f"reference_{task}.md"
    atomic_write_text(path, markdown(task, measured, smoke, command, device))
    return path


def _card(device: str) -> str:
    import torch

    if torch.cuda.is_available() and device != "cpu":
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def _judged(row: Measured, name: str) -> tuple[str, Verdict | None]:
    values = row.values.get(name, [])
    if row.not_run:
        return "not run", None
    if len(values) < row.trials_asked:
        return f"incomplete: {len(values)} of {row.trials_asked} trials", None
    found = verdict(name, values, row.published, row.reference)
    return found.text(), found


def markdown(task: str, measured: list[Measured], smoke: bool, command: str, device: str = "auto") -> str:
    title = f"# Does this install reproduce the literature? {task_table(task).title}"
    when = time.strftime("%Y-%m-%d")
    lines = [title, "", f"`{command or 'python -m benchmarks reference --task ' + task}` on {when}, {_card(device)}. "
             "Measured: mean ± std over this install's trials (each its own fine-tuning seed) of the released "
             "checkpoint the published number was measured with; verdict: within the published std of the "
             "published mean, or within the reference's stated tolerance where no spread is published.", ""]
    if smoke:
        lines += ["> SMOKE: the pipeline on the embedded data with random stand-ins for the released checkpoints. "
                  "These numbers mean nothing and are never compared with the published ones.", ""]
    lines += ["| framework | schedule | pretraining | `--ckpt` | metric | measured | published | difference | "
              "verdict | source |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in measured:
        published = row.published
        for name, value in published.metrics.items():
            values = row.values.get(name, [])
            if values:
                spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
                shown = f"{statistics.fmean(values):.2f}{spread} (n={len(values)})"
            else:
                shown = "—"
            std = f" ± {published.std[name]}" if name in published.std else ""
            claimed = f"{value}{std} ({published.trials} trial{'s' if published.trials > 1 else ''})"
            if smoke:
                judged, difference = "— (smoke: not compared)", "—"
            else:
                judged, found = _judged(row, name)
                difference = f"{found.difference:+.2f}" if found else "—"
            if row.not_run:
                judged = f"not run: {row.not_run}"
            elif row.errors:
                judged += "; failed " + "; ".join(e.splitlines()[0][:160] for e in row.errors)
            lines.append(f"| {row.benchmark.framework} | {row.schedule} | {published.pretraining} | "
                         f"{published.ckpt or '—'} | {name} | {shown} | {claimed} | {difference} | {judged} | "
                         f"{published.source} |")
    lines += ["", "References and their differences from our protocols: `python -m benchmarks protocols`.", ""]
    return "\n".join(lines)

