"""Which runs are paired, and the paired differences of each method to a baseline (numbers: benchmarks/stats.py).

A run is one fine-tuning seed of one pretrained checkpoint. Two runs are paired when chance drew the same for
both: the same fine-tuning seed (in every framework here the seed fixes the data order and the initialisation
of the new layers, whatever the checkpoint: docs/benchmarks.md#paired-comparisons) and, when methods are
compared, the same pretraining seed. Comparing methods, a method's checkpoints are told apart by their
pretraining seed; comparing one checkpoint with another (a baseline named by checkpoint), only the
fine-tuning seed pairs them. A run whose pair is missing is left out, and the comparison says which.

Where the pairs span two pretraining seeds or more, the unit of the interval is the pretraining seed: the
mean of its paired fine-tuning differences, so the interval covers both sources of spread; the fine-tuning
spread inside the pretraining seeds is given beside it. With one pretraining run of each, the unit is the
fine-tuning seed and the interval covers the fine-tuning spread only.

Smoke runs and every run on the embedded generated data are never compared: they say nothing about which
method transfers better.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from benchmarks.registry import Claim
from benchmarks.stats import Comparison, compare_paired, pairs_needed

BASELINE = "sl"
# what two compared runs must share besides their seeds; the architecture too: the new layers' initial weights
# come after the backbone's draws from the seeded generator
SETTING = ("framework", "schedule", "data", "opts", "arch")
BOTH_LEVELS = "pretraining and fine-tuning seeds (unit: a pretraining seed, the mean of its fine-tuning pairs)"
FINE_TUNING_ONLY = "fine-tuning seeds only (one pretraining run of each)"
PRETRAINING = "pretraining seeds (one fine-tuning run each, its own spread included)"
# fewer settings than this cannot give a two-sided sign test p below 0.05 (5 settings: p = 2 / 2^5 = 0.0625)
SIGN_TEST_LEAST = 6


@dataclass(frozen=True)
class PairedDifference:
    """`method - baseline` in one metric of one setting of a task, over the paired runs."""

    task: str
    setting: tuple[str, ...]  # SETTING's values
    method: str
    baseline: str
    metric: str
    comparison: Comparison
    covers: str  # which spread the interval covers (BOTH_LEVELS or FINE_TUNING_ONLY)
    fine_tuning_sd: float | None  # spread of the paired differences inside a pretraining seed
    left_out: tuple[str, ...]  # runs without a pair, in words

    def needed(self, effect: float) -> int | None:
        """Pairs (in the interval's unit) with which `effect` is detected with 80 % power; None without spread."""
        if self.comparison.sd is None or self.comparison.sd <= 0:
            return None
        return pairs_needed(effect, self.comparison.sd)

    @property
    def unit(self) -> str:
        return "fine-tuning seeds" if self.covers == FINE_TUNING_ONLY else "pretraining seeds"


def _run_name(key: tuple) -> str:
    if len(key) == 1:
        return f"fine-tuning seed {key[0]}"
    return f"pretraining seed {'unknown' if key[0] is None else key[0]}, fine-tuning seed {key[1]}"


def paired_differences(runs: pd.DataFrame, task: str, metrics: Sequence[str], baseline: str = BASELINE
                       ) -> list[PairedDifference]:
    """Every method (or checkpoint, when `baseline` names a checkpoint) against `baseline`, per setting and
    metric (each higher-is-better). `runs`: finished runs, one line each, with the columns of SETTING, method,
    checkpoint, pretrain_seed (None: unknown), seed and the metrics."""
    runs = runs[(runs["schedule"] != "smoke") & (runs["data"] != "embedded")]
    found = []
    for setting, group in runs.groupby(list(SETTING), sort=True, dropna=False):
        by = "method" if baseline in set(group["method"]) else "checkpoint" if baseline in set(group["checkpoint"]) \
            else None
        if by is None:
            continue
        arms, clashes = _arms(group, by)
        for arm in (a for a in arms if a != baseline):
            for metric in metrics:
                found.append(_difference(task, tuple(setting), arm, baseline, metric, arms[arm], arms[baseline],
                                         clashes[arm] | clashes[baseline]))
    return [d for d in found if d is not None]


def _arms(group: pd.DataFrame, by: str) -> tuple[dict[str, dict[tuple, pd.Series]], dict[str, set[tuple]]]:
    """arm -> pairing key -> run; and the keys that two runs of one arm share (two checkpoints of a method
    with the same pretraining seed), which pair nothing."""
    arms: dict[str, dict[tuple, pd.Series]] = defaultdict(dict)
    clashes: dict[str, set[tuple]] = defaultdict(set)
    for _, run in group.iterrows():
        pretrain_seed = run.get("pretrain_seed")
        pretrain_seed = None if pretrain_seed is None or pd.isna(pretrain_seed) else int(pretrain_seed)
        key = (pretrain_seed, int(run["seed"])) if by == "method" else (int(run["seed"]),)
        if key in arms[run[by]]:
            clashes[run[by]].add(key)
        arms[run[by]][key] = run
    return arms, clashes


def _difference(task: str, setting: tuple[str, ...], method: str, baseline: str, metric: str,
                mine: dict[tuple, pd.Series], base: dict[tuple, pd.Series], clashes: set[tuple]
                ) -> PairedDifference | None:
    def value(run: pd.Series) -> float | None:
        v = run.get(metric)
        return None if v is None or pd.isna(v) else float(v)

    ours = {k: value(r) for k, r in mine.items() if k not in clashes and value(r) is not None}
    theirs = {k: value(r) for k, r in base.items() if k not in clashes and value(r) is not None}
    clashed = sorted((k for k in clashes if k in mine), key=str)
    if not ours and not clashed:
        return None
    shared = sorted(set(ours) & set(theirs), key=str)
    unpaired = sorted(set(ours) - set(theirs), key=str)
    unused = sorted(set(theirs) - set(ours) - set(clashed), key=str)
    left_out = [f"{method}: {_run_name(k)} (no {baseline} run with its seeds)" for k in unpaired]
    left_out += [f"{baseline}: {_run_name(k)} (no {method} run with its seeds)" for k in unused]
    left_out += [f"{method} or {baseline}: {_run_name(k)} (two checkpoints with these seeds: compare them by "
                 "checkpoint name, --baseline)" for k in clashed]
    if not shared:
        why = f"no {baseline} run with the seeds of {method}'s" if not clashed else "no pair that is not ambiguous"
        return PairedDifference(task, setting, method, baseline, metric,
                                Comparison(0, math.nan, None, None, None, f"no pair: {why}", None),
                                FINE_TUNING_ONLY, None, tuple(left_out))
    differences = {k: ours[k] - theirs[k] for k in shared}
    pretraining_seeds = {k[0] for k in shared} if len(shared[0]) == 2 else {None}
    if None not in pretraining_seeds and len(pretraining_seeds) >= 2:
        within: dict[int, list[float]] = defaultdict(list)
        for key, d in differences.items():
            within[key[0]].append(d)
        means = [math.fsum(v) / len(v) for _, v in sorted(within.items())]
        squares = math.fsum((d - math.fsum(v) / len(v)) ** 2 for v in within.values() for d in v)
        freedom = sum(len(v) - 1 for v in within.values())
        within_sd = math.sqrt(squares / freedom) if freedom else None
        return PairedDifference(task, setting, method, baseline, metric, compare_paired(means),
                                BOTH_LEVELS if freedom else PRETRAINING, within_sd, tuple(left_out))
    comparison = compare_paired(list(differences.values()))
    return PairedDifference(task, setting, method, baseline, metric, comparison, FINE_TUNING_ONLY, comparison.sd,
                            tuple(left_out))


@dataclass(frozen=True)
class Tally:
    """One method's comparisons with the baseline across tasks and settings, in each task's first metric."""

    method: str
    better: int
    worse: int
    ties: int
    positive: int  # settings whose mean difference is above zero
    negative: int
    p_value: float | None  # the two-sided sign test over the non-zero mean differences; None: too few
    test: str  # the test in words, or why there is none


def tally(differences: Sequence[PairedDifference]) -> list[Tally]:
    """Wins, losses and ties per method, with a sign test over the settings where there are enough. The sign
    test counts directions only, so settings with different metrics (AP, mIoU, top-1) may be pooled."""
    from scipy.stats import binomtest

    methods = list(dict.fromkeys(d.method for d in differences))
    tallies = []
    for method in methods:
        mine = [d for d in differences if d.method == method and d.comparison.pairs > 0]
        verdicts = [d.comparison.verdict for d in mine]
        positive = sum(d.comparison.mean > 0 for d in mine)
        negative = sum(d.comparison.mean < 0 for d in mine)
        n = positive + negative
        if n >= SIGN_TEST_LEAST:
            p = float(binomtest(positive, n, 0.5).pvalue)
            test = f"sign test over {n} settings: p = {p:.3g}"
        else:
            p = None
            test = (f"no test: {n} setting{'s' if n != 1 else ''} with a non-zero difference; a two-sided sign "
                    f"test needs {SIGN_TEST_LEAST} or more to reach p < 0.05")
        tallies.append(Tally(method, verdicts.count("better"), verdicts.count("worse"),
                             sum(v not in ("better", "worse") for v in verdicts), positive, negative, p, test))
    return tallies


EXPLAINED = ("Per metric: the mean of the paired differences, its 95 % confidence interval (Student's t over the "
             "pairs: exact for normal differences, and wide with 2 or 3 pairs, t = 12.7 and 4.3), the verdict, "
             "which spread the interval covers, the fine-tuning spread of the differences inside a pretraining "
             "seed, the smallest difference these pairs detect with 80 % power (5 % two-sided) and, where a paper "
             "claims an effect on the metric, how many pairs (in the interval's unit) would detect it")


def _claim_cell(difference: PairedDifference, claims: Sequence[Claim]) -> str:
    cells = []
    for claim in (c for c in claims if c.metric == difference.metric):
        needed = difference.needed(claim.effect)
        cells.append(f"{claim.effect:+g}: " + ("—" if needed is None else f"{needed} {difference.unit}"))
    return "; ".join(cells) or "—"


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(differences: Sequence[PairedDifference], claims: Sequence[Claim] = (), settings: bool = True
                   ) -> list[str]:
    """The differences as Markdown table lines, then the runs left out and the claims' sources."""
    head = ["framework", "schedule", "data"] if settings else []
    lines = ["| " + " | ".join([*head, "method", "metric", "pairs", "Δ mean", "95 % CI", "verdict",
                                "the interval covers", "fine-tuning sd", "detectable (80 % power)",
                                "pairs for a claimed effect"]) + " |",
             "|" + "---|" * (len(head) + 10)]
    for d in differences:
        c = d.comparison
        where = [d.setting[0], d.setting[1], d.setting[2] or "—"] if settings else []
        if d.setting[3] and settings:
            where[1] += f" (opts: {d.setting[3]})"
        lines.append("| " + " | ".join([*where, d.method, d.metric, str(c.pairs), "—" if c.pairs == 0 else
                                        f"{c.mean:+.2f}", c.interval(), c.verdict, d.covers if c.pairs else "—",
                                        _number(d.fine_tuning_sd), _number(c.detectable),
                                        _claim_cell(d, claims)]) + " |")
    left_out = sorted({run for d in differences for run in d.left_out})
    if left_out:
        lines += ["", "Left out (no pair): " + "; ".join(left_out) + "."]
    for claim in claims:
        lines += ["", f"Claimed effect on {claim.metric}: {claim.effect:+g} ({claim.source})."]
    return lines


def text_lines(differences: Sequence[PairedDifference], claims: Sequence[Claim] = ()) -> list[str]:
    """The differences as indented console lines (what `make tables` prints under each table)."""
    lines = []
    for d in differences:
        c = d.comparison
        where = "/".join(x for x in d.setting[:4] if x)
        if c.pairs == 0:
            lines.append(f"  {d.method} − {d.baseline} {d.metric} ({where}): {c.verdict}")
            continue
        claimed = _claim_cell(d, claims)
        lines.append(f"  {d.method} − {d.baseline} {d.metric} ({where}): {c.mean:+.2f} {c.interval()}, {c.verdict} "
                     f"({d.unit}); detectable {_number(c.detectable)}"
                     + ("" if claimed == "—" else f"; a claimed {claimed}"))
    return lines


def tally_lines(tallies: Sequence[Tally], baseline: str) -> list[str]:
    """The across-tasks summary as Markdown table lines."""
    lines = [f"| method | better than {baseline} | worse | neither (not distinguishable, or one pair) | mean "
             "difference above / below zero | test |", "|---|---|---|---|---|---|"]
    lines += [f"| {t.method} | {t.better} | {t.worse} | {t.ties} | {t.positive} / {t.negative} | {t.test} |"
              for t in tallies]
    return lines
