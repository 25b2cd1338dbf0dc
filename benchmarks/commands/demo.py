"""`make demo` (`python -m benchmarks demo`): the main job on the embedded data, and where its time went.

Steps, each in its own process with its own log under `runs/demo/`: generate the benchmarks' embedded
data; pretrain SL, SL-MLP and LOOK (`pretrain/configs/*_cpu.yaml`); every benchmark whose declaration puts
it in the demo (`python -m benchmarks list --demo`) for each backbone, one seed each, one process per
framework (`benchmarks run TASK... --ckpt CKPT...`: each run its own directory and records); `collect`
into `runs/demo/tables/` (not results/: smoke tables never replace the committed ones).
At the end one table: each step's wall time and share, and each benchmark run's own time (from its
records), so a user sees which step is slow on their machine. A finished step is skipped on a rerun (and
shows its short time), as each command does alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pretrain.errors import UserError
from pretrain.files import atomic_write_text

PRETRAIN_RUNS = ("sl_cpu", "slmlp_cpu", "look_cpu")  # pretrain/configs/<run>.yaml, written to runs/pretrain/<run>


def _timed(steps: list[tuple[str, float]], name: str, work: Callable[[], None]) -> None:
    print(f"{name} ...", flush=True)
    start = time.perf_counter()
    work()
    steps.append((name, time.perf_counter() - start))
    print(f"{name}: {steps[-1][1]:.0f} s", flush=True)


def _command(argv: list[str], log: Path) -> Callable[[], None]:
    def run() -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            code = subprocess.run([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT).returncode
        if code:
            tail = "\n".join(log.read_text().splitlines()[-5:])
            raise UserError(f"`python {' '.join(argv)}` failed (exit {code}); last lines of {log}:\n{tail}")

    return run


def _newest_export(run: str) -> Path:
    exports = sorted(Path("runs/pretrain", run, "export").glob("*.pth"), key=lambda p: p.stat().st_mtime)
    if not exports:
        raise UserError(f"pretraining {run} exported no backbone under runs/pretrain/{run}/export")
    return exports[-1]


def minutes_seconds(seconds: float) -> str:
    """'3 min 59 s' / '4 min 00 s': rounded to the second before it is split (59.6 s is 1 min 00 s, not 0 min 60 s)."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def time_table(steps: list[tuple[str, float]]) -> str:
    total = sum(seconds for _, seconds in steps)
    lines = ["| step | wall time | share |", "|---|---:|---:|"]
    for name, seconds in steps:
        lines.append(f"| {name} | {minutes_seconds(seconds)} | {seconds / total:.0%} |")
    lines.append(f"| **total** | **{minutes_seconds(total)}** | |")
    return "\n".join(lines)


def run_times(log: Path) -> list[tuple[str, float]]:
    """(run, seconds) for each run a `benchmarks run` log names, from its records: started (after its weights
    were converted) to finished. A run skipped as already finished shows the time it took then."""
    import datetime
    import json

    found = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        if line.startswith("run directory: "):
            run_dir = Path(line.removeprefix("run directory: "))
            record = json.loads((run_dir / "result.json").read_text())
            seconds = (datetime.datetime.fromisoformat(record["finished"])
                       - datetime.datetime.fromisoformat(record["started"])).total_seconds()
            task, framework, _, ckpt = run_dir.parts[-5:-1]
            found.append((f"{ckpt.rsplit('-', 1)[0]}: {task} ({framework})", seconds))  # the name less its hash
    return found


def demo(logs: str | Path = "runs/demo") -> list[tuple[str, float]]:
    from benchmarks.tasks import all_benchmarks

    logs = Path(logs)
    demo_benchmarks = [b for b in all_benchmarks() if b.demo_schedule]
    steps: list[tuple[str, float]] = []
    _timed(steps, "generate the benchmarks' embedded data",
           lambda: [b.embedded_data() for b in demo_benchmarks])
    for run in PRETRAIN_RUNS:
        _timed(steps, f"pretrain {run}", _command(["-m", "pretrain", "train", "--config",
                                                   f"pretrain/configs/{run}.yaml"], logs / f"pretrain_{run}.log"))
    ckpts = [str(_newest_export(run)) for run in PRETRAIN_RUNS]
    # one process per framework (and schedule): its benchmarks for every backbone one after the other, so that
    # imports and framework set-up are paid once; each run keeps its own directory, records and log
    groups: dict[tuple[str, str], list[str]] = {}
    for b in demo_benchmarks:
        groups.setdefault((b.framework, b.demo_schedule), []).append(b.name)
    for (framework, schedule), tasks in groups.items():
        name = f"{', '.join(tasks)} ({framework}, {schedule}) for the {len(ckpts)} backbones"
        _timed(steps, name, _command(
            ["-m", "benchmarks", "run", *tasks, "--ckpt", *ckpts, "--framework", framework, "--schedule", schedule,
             "--seed", "0"], logs / f"{framework}_{schedule}.log"))
    # the demo's smoke tables stay beside its logs: results/ holds the tables of benchmark runs
    tables = logs / "tables"
    _timed(steps, f"collect (tables in {tables}/)",
           _command(["-m", "benchmarks", "collect", "--out", str(tables)], logs / "collect.log"))
    if (logs / "collect.log").is_file():
        print((logs / "collect.log").read_text())
    table = time_table(steps)
    runs = [row for framework, schedule in groups for row in run_times(logs / f"{framework}_{schedule}.log")]
    if runs:
        table += "\n\nEach benchmark run inside those steps (training and evaluation, from its records):\n\n" + \
            "\n".join(["| run | time |", "|---|---:|"] + [f"| {name} | {seconds:.0f} s |" for name, seconds in runs])
    atomic_write_text(logs / "times.md", f"# make demo: where the time went\n\n{table}\n")
    print(f"\nWhere the time went (also in {logs / 'times.md'}):\n{table}")
    print("\n(smoke numbers on generated data: they show the pipeline works, not which method transfers better.\n"
          " The generated data cannot show the papers' effect; the real-data tier can: make bench-proxy "
          "DATASET=fmnist, results/proxy_fmnist.md)")
    return steps
