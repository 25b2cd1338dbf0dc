"""The benchmark registry: every benchmark declares itself once, in its own module under `benchmarks/tasks/`.

A declaration says everything the shared code needs: what data it reads (required files, the embedded
generator), how it runs (a module-level function, so that spawned processes can unpickle it), which
schedules exist, what it reports (metric columns, which must be finite, which the charts show) and the
protocol checks to make before anything is written. The runner, `collect`, the CLI's help and the demo
list read it through `benchmarks.tasks`; no other table names the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reference import Difference, Reference
from benchmarks.spec import RunSpec, TrainResult


@dataclass(frozen=True)
class Column:
    group: str  # metric group in result.json ("bbox", "sem_seg", ...)
    metric: str  # metric name inside the group
    name: str  # column name in the tables


@dataclass(frozen=True)
class Claim:
    """An effect a paper states on a task's metric: the tables say how many seeds would detect it."""

    metric: str  # a column of the task's table
    effect: float
    source: str


@dataclass(frozen=True)
class Benchmark:
    name: str  # the task, as users type it: coco, voc, ade20k, probe
    framework: str
    title: str  # of the task's table (the same for every framework of a task)
    required_files: tuple[str, ...]  # relative to the data root
    embedded_data: Callable[[], Path]  # the generated dataset the smoke schedule uses
    run: Callable[[RunSpec], TrainResult]  # module-level, so that spawned processes can unpickle it
    columns: tuple[Column, ...]  # what the tables show, in order
    required: tuple[tuple[str, str], ...]  # (group, metric) that must be finite for the run to count
    headline: tuple[str, ...]  # column names shown in the charts and the printed summary
    # the first real schedule is the one a run on the user's data runs when none is named (its reference's)
    schedules: tuple[str, ...] = ("1x", "2x", "smoke")
    embedded_schedules: tuple[str, ...] = ("smoke",)  # schedules that may run on the embedded data
    demo_schedule: str | None = "smoke"  # what `make demo` runs (None: not in the demo)
    default_seeds: int = 1  # seeds run when the user names none (noisy benchmarks report a mean over several)
    converts: bool = True  # False: the task reads the checkpoint itself (frozen features)
    multi_process: bool = True  # False: one process whatever --procs says (the probe)
    # (schedule, opts, processes) -> the protocol as it will run (global and per-process batch, lr, length);
    # refuses bad --opts, or a process count that does not divide the protocol's global batch, before anything
    # is written
    check_protocol: Callable[[str, tuple[str, ...], int], dict[str, Any]] | None = None
    note: str = ""  # printed under the task's table title
    schedule_length: Callable[[str], str] | None = None  # schedule -> its real length, from the framework config
    by_method: bool = False  # the table also averages each method's checkpoints (e.g. pretraining seeds)
    # (table rows, results folder) -> extra figures written there, shown under the table
    figures: Callable[[Any, Path], list[str]] | None = None
    # every real schedule -> the published reference it reproduces, or why there is none (one line)
    references: dict[str, Reference | str] = field(default_factory=dict)
    # (schedule, reference) -> every setting where the protocol differs from the reference (framework code)
    compare_reference: Callable[[str, Reference], list[Difference]] | None = None
    # schedule -> what the protocol builds that a config string does not pin (benchmarks/built.py)
    built_semantics: Callable[[str], dict[str, str]] | None = None
    # the higher-is-better metrics the paired comparisons cover (default: the headline)
    compared_metrics: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()  # effects papers state on this task (the same for every framework of a task)
    # a task without a framework config that still takes --opts: refuses a bad key before anything is written
    check_opts: Callable[[tuple[str, ...]], None] | None = None

    @property
    def real_schedules(self) -> tuple[str, ...]:
        return tuple(s for s in self.schedules if s not in self.embedded_schedules)

    @property
    def protocol_schedule(self) -> str:
        """What a run on the user's data runs when no schedule is named: the first real schedule, the one the
        published reference uses where there is one (a task whose one schedule reads any data: that one)."""
        return (self.real_schedules or self.schedules)[0]

    @property
    def embedded_schedule(self) -> str:
        """What a run on the embedded data runs when no schedule is named (smoke)."""
        return self.embedded_schedules[0]

    @property
    def compared(self) -> tuple[str, ...]:
        return self.compared_metrics or self.headline

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.framework


REGISTRY: dict[tuple[str, str], Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if benchmark.key in REGISTRY:
        raise ValueError(f"benchmark {benchmark.name} / {benchmark.framework} registered twice")
    REGISTRY[benchmark.key] = benchmark
    return benchmark
