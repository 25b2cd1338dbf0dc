"""How many seeds would detect an effect? From the spread of a task's paired runs (or a spread you give),
before anyone spends GPU-days:

    python -m benchmarks plan-seeds --task coco --effect 0.8 [--metric AP_bb] [--baseline sl] [--runs runs/bench]
    python -m benchmarks plan-seeds --task coco --effect 0.8 --sd 0.4   # a known spread of paired differences

The spread is that of the paired differences in the comparisons' unit (benchmarks/comparisons.py): a
pretraining seed where the runs span several, otherwise a fine-tuning seed.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.comparisons import BASELINE, PairedDifference
from benchmarks.stats import detectable_difference, pairs_needed
from pretrain.errors import UserError

PLANNED = (2, 3, 5, 10, 20)  # pair counts whose detectable difference is printed for a given spread


def plan_seeds(task: str, effect: float | None, metric: str | None = None, baseline: str = BASELINE,
               runs: str | Path = "runs/bench", sd: float | None = None) -> list[str]:
    """The lines that answer; raises UserError when there is nothing to plan from."""
    from benchmarks.tasks import task_names, task_table

    if task not in task_names():
        raise UserError(f"unknown task '{task}'; known: {', '.join(task_names())}")
    table = task_table(task)
    metrics = table.compared
    if metric is not None and metric not in metrics:
        raise UserError(f"{task} compares {', '.join(metrics)}; not '{metric}'")
    claims = [c for c in table.claims if metric in (None, c.metric)]
    if effect is None and not claims:
        raise UserError(f"give the effect to detect with --effect (no paper's claim on {task} is declared)")
    if effect is not None and effect <= 0:
        raise UserError(f"--effect must be above zero (a difference in {metric or metrics[0]}), not {effect}")
    targets = [(effect, metric, "as asked")] if effect is not None else [(c.effect, c.metric, c.source)
                                                                         for c in claims]
    if sd is not None:
        if sd <= 0:
            raise UserError(f"--sd must be above zero, not {sd}")
        lines = [f"a spread of paired differences of {sd:g}: detects with 80 % power (5 % two-sided) "
                 + ", ".join(f"{detectable_difference(sd, n):.2f} with {n} pairs" for n in PLANNED)]
        return lines + [f"{size:+g} in {name or metrics[0]} ({why}): {pairs_needed(size, sd)} pairs"
                        for size, name, why in targets]
    from benchmarks.commands.collect import gather, task_differences

    frame = gather(Path(runs))
    found = [d for d in (task_differences(frame, task, baseline) if not frame.empty else [])
             if d.comparison.sd is not None and any(d.metric == (name or d.metric) for _, name, _ in targets)]
    if not found:
        raise UserError(f"no paired benchmark runs of {task} under {runs} with a spread (runs of {baseline} and "
                        "another method sharing two seeds or more; smoke runs do not count); plan from a known "
                        "spread of paired differences with --sd")
    return [line for d in found for line in _plan(d, targets)]


def _plan(d: PairedDifference, targets: list[tuple[float, str | None, str]]) -> list[str]:
    c = d.comparison
    where = "/".join(x for x in d.setting if x)  # with the architecture
    lines = [f"{d.method} − {d.baseline}, {d.metric} ({d.task} {where}): {c.pairs} pairs ({d.unit}), spread of the "
             f"differences {c.sd:.3g}; detectable now {c.detectable:.2f}"]
    for size, name, why in targets:
        if name in (None, d.metric):
            lines.append(f"  {size:+g} ({why}): {pairs_needed(size, c.sd)} {d.unit}")
    return lines
