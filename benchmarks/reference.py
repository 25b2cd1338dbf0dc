"""Each real protocol's published reference: the configuration it reproduces, key by key, and the published
results of named checkpoints under it.

A benchmark declares, per schedule, a `Reference`: the reference's configuration as its own files state it
(the framework config it starts from plus what its files set), the published results of released
checkpoints under it (source, trials, spread), and a one-line reason for every setting where our protocol
differs. `python -m benchmarks protocols` resolves both configurations with the framework's own config
code and prints every difference; a difference without a reason fails the tests. Settings that belong to
one run (paths, seeds, devices, the checkpoint file, the dataset's class count) are not compared: each
framework adapter names them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

UNEXPLAINED = "UNEXPLAINED"


@dataclass(frozen=True)
class Published:
    """One published result under a reference protocol."""

    pretraining: str  # as the source names it, e.g. "ImageNet-1M, MoCo v2, 800ep"
    metrics: dict[str, float]  # the task table's column name -> value
    source: str  # where it is published: repository and file, or paper and table
    trials: int = 1  # how many fine-tuning runs the value is the mean of
    std: dict[str, float] = field(default_factory=dict)  # the published spread, where the source states one
    ckpt: str | None = None  # the `--ckpt` name of the released checkpoint (benchmarks/checkpoints.py)


@dataclass(frozen=True)
class Pin:
    """One file a reference reads, pinned: the repository, a commit (or a release whose packaged copy is the one
    read here) and the file's git blob id, which names its exact content (`git rev-parse REV:PATH`)."""

    repository: str  # owner/name on GitHub
    revision: str  # a commit, or a release tag
    path: str
    blob: str = ""  # the git blob id of the file at `revision`
    installed: str = ""  # "package:path inside it": the installed copy the tests hold to `blob`

    def __str__(self) -> str:
        return f"{self.repository}@{self.revision} {self.path}" + (f" (blob {self.blob[:7]})" if self.blob else "")


@dataclass(frozen=True)
class Reference:
    """The published configuration a real protocol reproduces, and what was published under it."""

    reproduces: str  # repository and file(s) of the reference configuration
    base: str | None  # the framework config it starts from (Detectron2 model-zoo or mmengine `pkg::` path)
    overrides: dict[str, Any]  # what the reference's own files set over `base`, as they state it
    differences: dict[str, str] = field(default_factory=dict)  # setting -> why ours differs, one line
    published: tuple[Published, ...] = ()
    # |measured mean - published| taken as reproduced when the source states no spread (then said why)
    tolerance: float | None = None
    tolerance_source: str = ""
    reference_gpus: int | None = None  # OpenMMLab: the GPU count its per-GPU batch size assumes
    note: str = ""
    pinned: tuple[Pin, ...] = ()  # every file it reads, and where its published numbers are
    # what it built that its config strings do not pin (benchmarks/built.py), in the framework of its time
    built: dict[str, str] = field(default_factory=dict)
    built_source: str = ""  # which framework versions `built` describes, and how that is known
    built_differences: dict[str, str] = field(default_factory=dict)  # aspect -> why ours differs, one line
    # Detectron2: the config defaults of its time (a file under benchmarks/configs/), instead of today's get_cfg()
    defaults: str | None = None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (a Detectron2 CfgNode, an mmengine config as a dict) and lists of them as
    'a.b[2].c' -> leaf value. Tuples and lists of plain values are leaves (as lists)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(tree, (list, tuple)) and any(isinstance(item, (dict, list, tuple)) for item in tree):
        flat = {}
        for index, value in enumerate(tree):
            flat.update(flatten(value, f"{prefix}[{index}]"))
        return flat or {prefix: []}
    return {prefix: list(tree) if isinstance(tree, tuple) else tree}


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, float) or isinstance(theirs, float):
        try:
            return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs, strict=True))
    return ours == theirs


@dataclass(frozen=True)
class Difference:
    key: str
    ours: Any
    reference: Any
    reason: str  # the declared reason, or UNEXPLAINED


MISSING = "(not set)"


def differences(ours: dict[str, Any], reference: dict[str, Any], declared: dict[str, str],
                ignored: Callable[[str], bool]) -> list[Difference]:
    """Every setting (flattened key) where the two configurations differ, with its declared reason. A
    declared key also covers the settings under it ('model.roi_head.bbox_head' covers its fields)."""
    rows = []
    for key in sorted(set(ours) | set(reference)):
        if ignored(key):
            continue
        mine, theirs = ours.get(key, MISSING), reference.get(key, MISSING)
        if _same(mine, theirs):
            continue
        reason = next((why for covered, why in declared.items()
                       if key == covered or key.startswith((covered + ".", covered + "["))), UNEXPLAINED)
        rows.append(Difference(key, mine, theirs, reason))
    return rows


def unused_reasons(rows: Iterable[Difference], declared: dict[str, str]) -> list[str]:
    """Declared reasons that no difference needs any more (stale declarations are errors too)."""
    keys = [row.key for row in rows]
    return [covered for covered in declared
            if not any(k == covered or k.startswith((covered + ".", covered + "[")) for k in keys)]


@dataclass(frozen=True)
class Verdict:
    metric: str
    measured_mean: float
    measured_std: float | None  # None with one trial
    trials: int
    published: float
    allowed: float | None  # the gap taken as reproduced; None: the reference gives nothing to judge by
    allowed_from: str  # "published std of N trials" or the tolerance's source
    reproduces: bool | None

    @property
    def difference(self) -> float:
        return self.measured_mean - self.published

    def text(self) -> str:
        if self.reproduces is None:
            return f"differs by {self.difference:+.2f} (no published spread or tolerance to judge it)"
        if self.reproduces:
            return f"reproduces ({self.difference:+.2f}, within {self.allowed:g}: {self.allowed_from})"
        return f"differs by {self.difference:+.2f} (more than {self.allowed:g}: {self.allowed_from})"


def verdict(metric: str, measured: list[float], published: Published, reference: Reference) -> Verdict:
    """Measured trials against one published value. Reproduced when the measured mean is within the
    published standard deviation of the published mean (the papers quote their std as where a rerun lands),
    or, where the source states no spread, within the reference's declared tolerance."""
    if not measured:
        raise ValueError(f"{metric}: no measured trials")
    mean = statistics.fmean(measured)
    spread = statistics.stdev(measured) if len(measured) > 1 else None
    allowed: float | None
    if metric in published.std:
        allowed, source = published.std[metric], f"published std of {published.trials} trials"
    elif reference.tolerance is not None:
        allowed, source = reference.tolerance, reference.tolerance_source or "the reference's tolerance"
    else:
        allowed, source = None, ""
    target = published.metrics[metric]
    judged = None if allowed is None else abs(mean - target) <= allowed + 1e-9
    return Verdict(metric, mean, spread, len(measured), target, allowed, source, judged)


def _cell(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_built(ours: dict[str, str], reference: dict[str, str], reasons: dict[str, str]) -> list[Difference]:
    """Every aspect where what we build differs from what the reference built (benchmarks/built.py), with its
    declared reason."""
    from benchmarks.built import ASPECTS

    def order(aspect: str) -> tuple[int, str]:
        return (ASPECTS.index(aspect) if aspect in ASPECTS else len(ASPECTS), aspect)

    return [Difference(aspect, ours.get(aspect, "(not built)"), reference.get(aspect, "(not declared)"),
                       reasons.get(aspect, UNEXPLAINED))
            for aspect in sorted(set(ours) | set(reference), key=order)
            if ours.get(aspect) != reference.get(aspect)]


def _built_lines(benchmark: Any, schedule: str, reference: Reference) -> tuple[list[str], int]:
    """What our protocol builds beside what the reference built (benchmarks/built.py), and how many differences
    have no reason (or reasons no difference)."""
    if benchmark.built_semantics is None:
        return ["UNCHECKED: this benchmark reports nothing of what it builds.", ""], 1
    ours = benchmark.built_semantics(schedule)
    rows = compare_built(ours, reference.built, reference.built_differences)
    stale = [aspect for aspect in reference.built_differences if aspect not in {r.key for r in rows}]
    lines = [f"What is built: ours with the frameworks installed here; the reference's with "
             f"{reference.built_source or '(not declared)'}.", "",
             "| built | ours | reference | why |", "|---|---|---|---|"]
    for aspect in sorted(set(ours) | set(reference.built), key=lambda a: [*ours, *reference.built].index(a)):
        mine, theirs = ours.get(aspect, "(not built)"), reference.built.get(aspect, "(not declared)")
        why = next((r.reason for r in rows if r.key == aspect), "same")
        lines.append(f"| {aspect} | {mine} | {theirs} | {why} |")
    lines += [f"- STALE reason (no such difference any more): {aspect}" for aspect in stale]
    return lines + [""], sum(r.reason == UNEXPLAINED for r in rows) + len(stale)


def report(benchmarks: Iterable[Any]) -> tuple[str, int]:
    """Every real protocol against its reference, as markdown: the differences with their reasons and the
    published results. Returns the text and the number of unexplained differences and stale reasons."""
    lines: list[str] = []
    problems = 0
    for benchmark in benchmarks:
        for schedule in benchmark.real_schedules:
            reference = benchmark.references.get(schedule, "UNDECLARED: no reference and no reason")
            lines.append(f"### {benchmark.name} / {benchmark.framework} / {schedule}")
            lines.append("")
            if isinstance(reference, str):
                problems += reference.startswith("UNDECLARED")
                lines += [f"Reference: {reference}.", ""]
                continue
            lines += [f"Reproduces {reference.reproduces}.", ""]
            if reference.pinned:
                lines += ["Pinned: " + "; ".join(map(str, reference.pinned)) + ".", ""]
            else:
                problems += 1
                lines += ["UNPINNED: the reference names no repository@commit for its files.", ""]
            rows = benchmark.compare_reference(schedule, reference)
            stale = unused_reasons(rows, reference.differences)
            problems += sum(row.reason == UNEXPLAINED for row in rows) + len(stale)
            if rows:
                lines += ["| setting | ours | reference | why |", "|---|---|---|---|"]
                lines += [f"| `{r.key}` | {_cell(r.ours)} | {_cell(r.reference)} | {r.reason} |" for r in rows]
            else:
                lines.append("Every setting agrees.")
            lines += [f"- STALE reason (no such difference any more): `{key}`" for key in stale]
            lines.append("")
            built, built_problems = _built_lines(benchmark, schedule, reference)
            lines += built
            problems += built_problems
            if reference.published:
                metrics = list(dict.fromkeys(m for p in reference.published for m in p.metrics))
                lines += ["| published: pretraining | " + " | ".join(metrics) + " | trials | `--ckpt` | source |",
                          "|---" * (len(metrics) + 4) + "|"]
                for p in reference.published:
                    values = [f"{p.metrics[m]}" + (f" ± {p.std[m]}" if m in p.std else "") if m in p.metrics
                              else "" for m in metrics]
                    lines.append(f"| {p.pretraining} | " + " | ".join(values)
                                 + f" | {p.trials} | {p.ckpt or ''} | {p.source} |")
            else:
                lines.append("No published result under it could be checked here; none is quoted.")
            if reference.note:
                lines.append(f"\n{reference.note}")
            lines.append("")
    return "\n".join(lines), problems
