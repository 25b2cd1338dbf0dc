"""Gather every run directory under `runs/bench` into `results/`: per task a CSV, a Markdown table and a
bar chart, one row per (pretrained checkpoint, framework, schedule), mean ± std over finished seeds.

Rows come only from the run directories, so a failed run never removes a finished one: a checkpoint
whose runs all failed appears as a failed row with its error. Smoke runs are listed apart and labelled
as pipeline checks on generated data; they are never benchmark numbers. Published numbers may be
added as rows marked "quoted" from `results/quoted.csv`, with their source.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.tasks import task_names, task_table
from pretrain.files import atomic_path, atomic_write_json, atomic_write_text

SMOKE_NOTE = ("smoke schedule on the embedded generated data: shows that the pipeline runs end to end; "
              "NOT a benchmark result, and says nothing about which method transfers better")


def _columns(task: str) -> list[tuple[str, str, str]]:
    """(metric group in result.json, metric, column) of a task's table, from its benchmark declaration."""
    return [(c.group, c.metric, c.name) for c in task_table(task).columns]


@dataclass
class Row:
    task: str
    checkpoint: str
    method: str
    arch: str
    recipe: str
    framework: str
    framework_version: str
    schedule: str
    checkpoint_sha256: str
    data: str = ""
    run_dirs: list[Path] = field(default_factory=list)
    config_sha256: set[str] = field(default_factory=set)
    seeds: dict[int, dict[str, float]] = field(default_factory=dict)  # finished seed -> column -> value
    failed: dict[int, str] = field(default_factory=dict)  # failed seed -> error
    date: str = ""
    quoted_source: str = ""
    opts: tuple[str, ...] = ()
    batches: set[str] = field(default_factory=set)  # "global = processes x per process", per finished seed

    @property
    def status(self) -> str:
        if self.quoted_source:
            return "quoted"
        if not self.seeds:
            return "failed"
        return "finished" if not self.failed else f"finished ({len(self.failed)} seed(s) failed)"

    def summary(self, column: str) -> tuple[float, float] | None:
        values = [scores[column] for scores in self.seeds.values() if column in scores]
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gather(runs: Path) -> list[Row]:
    rows: dict[tuple[str, str, str, str, str], Row] = {}
    for run_json in sorted(runs.glob("*/*/*/*/seed*/run.json")):
        run_dir = run_json.parent
        result, failure = _read_json(run_dir / "result.json"), _read_json(run_dir / "failure.json")
        record = result if result and result.get("status") == "finished" else failure or _read_json(run_json)
        if record is None or record.get("task") not in task_names():
            continue
        data = "embedded" if record.get("embedded_data") else Path(record.get("data", "")).name
        opts = tuple(record.get("opts") or ())
        key = (record["task"], record["checkpoint_sha256"], record["framework"], record["schedule"], data, opts)
        row = rows.setdefault(key, Row(
            task=record["task"], checkpoint=Path(record["checkpoint"]).name.split(".")[0],
            method=record.get("method") or "?", arch=record.get("arch") or "?", recipe=record.get("recipe") or "",
            framework=record["framework"], framework_version=record.get("framework_version", ""),
            schedule=record["schedule"], checkpoint_sha256=record["checkpoint_sha256"], data=data, opts=opts))
        seed = int(record["seed"])
        row.run_dirs.append(run_dir)
        if record is result:
            row.seeds[seed] = {column: float(result["metrics"].get(group, {}).get(metric, math.nan))
                               for group, metric, column in _columns(row.task)}
            row.config_sha256.add(result.get("config_sha256", ""))
            row.date = max(row.date, result.get("finished", ""))
            protocol = result.get("protocol") or {}
            if "global_batch" in protocol:
                row.batches.add(f"{protocol['global_batch']} = {protocol['world_size']} × "
                                f"{protocol['per_process_batch']}")
        elif failure is not None:
            row.failed[seed] = failure.get("error", "unknown error")
        else:  # started, neither finished nor failed: running, or killed (a rerun resumes it)
            row.failed[seed] = "unfinished (running, or interrupted: rerun the same command to resume)"
    return sorted(rows.values(), key=lambda r: (r.task, r.schedule == "smoke", r.schedule, r.framework,
                                                r.method, r.checkpoint))


def read_quoted(path: Path) -> list[Row]:
    """Published numbers, one per line: task,name,method,arch,framework,schedule,source,<columns...>."""
    if not path.is_file():
        return []
    rows = []
    for line in csv.DictReader(io.StringIO(path.read_text())):
        row = Row(task=line["task"], checkpoint=line["name"], method=line["method"], arch=line["arch"],
                  recipe=line.get("recipe", ""), framework=line["framework"], framework_version="",
                  schedule=line["schedule"], checkpoint_sha256="", quoted_source=line["source"])
        row.seeds[0] = {column: float(line[column]) for _, _, column in _columns(row.task)
                        if line.get(column) not in (None, "")}
        rows.append(row)
    return rows


def _cell(row: Row, column: str) -> str:
    summary = row.summary(column)
    if summary is None or math.isnan(summary[0]):
        return "—"
    mean, std = summary
    return f"{mean:.1f}" if row.quoted_source or len(row.seeds) == 1 else f"{mean:.1f} ± {std:.1f}"


def _csv(rows: list[Row], task: str) -> str:
    columns = [c for _, _, c in _columns(task)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["checkpoint", "method", "arch", "recipe", "data", "framework", "framework_version", "schedule",
                     "opts", "batch (global = processes x per process)",
                     "status", "seeds", *[f"{c}_{s}" for c in columns for s in ("mean", "std")],
                     "checkpoint_sha256", "config_sha256", "date", "error", "source"])
    for row in rows:
        stats = []
        for column in columns:
            summary = row.summary(column)
            stats += ["", ""] if summary is None else [f"{summary[0]:.3f}", f"{summary[1]:.3f}"]
        seeds = " ".join(map(str, sorted(row.seeds))) if not row.quoted_source else ""
        writer.writerow([row.checkpoint, row.method, row.arch, row.recipe, row.data, row.framework,
                         row.framework_version, row.schedule, " ".join(row.opts), "; ".join(sorted(row.batches)),
                         row.status, seeds, *stats, row.checkpoint_sha256, " ".join(sorted(row.config_sha256)),
                         row.date,
                         "; ".join(f"seed {s}: {e}" for s, e in sorted(row.failed.items())), row.quoted_source])
    return out.getvalue()


def _markdown(rows: list[Row], task: str, chart: str | None) -> str:
    columns = [c for _, _, c in _columns(task)]
    lines = [f"# {task_table(task).title}", "", "Generated by `python -m benchmarks collect` from the run directories; "
             "mean ± std over the seeds listed. Do not edit by hand.", ""]
    for smoke in (False, True):
        part = [r for r in rows if (r.schedule == "smoke") == smoke]
        if not part:
            continue
        lines += [f"## {'Smoke runs' if smoke else 'Benchmark runs'}", ""]
        if smoke:
            lines += [f"> {SMOKE_NOTE}.", ""]
        lines += ["| checkpoint | method | arch | pretraining | data | framework | schedule | batch (global = "
                  "processes × per process) | seeds | " + " | ".join(columns) + " | status | provenance |",
                  "|" + "---|" * (len(columns) + 11)]
        for row in part:
            seeds = ", ".join(map(str, sorted(row.seeds))) if not row.quoted_source else "—"
            if row.quoted_source:
                provenance = f"quoted from {row.quoted_source}"
            else:
                provenance = (f"ckpt `{row.checkpoint_sha256[:12]}`, {row.framework} {row.framework_version}, "
                              f"config `{'/'.join(sorted(h[:8] for h in row.config_sha256 if h)) or '—'}`, "
                              f"{row.date[:10] or '—'}")
            status = row.status
            if row.failed:
                status += ": " + "; ".join(f"seed {seed}: {error.splitlines()[0][:120]}"
                                           for seed, error in sorted(row.failed.items()))
            name = f"*{row.checkpoint} (quoted)*" if row.quoted_source else row.checkpoint
            if row.opts:
                name += f" (opts: {' '.join(row.opts)})"
            lines.append(f"| {name} | {row.method} | {row.arch} | {row.recipe or '—'} | {row.data or '—'} | "
                         f"{row.framework} | {row.schedule} | {'; '.join(sorted(row.batches)) or '—'} | "
                         f"{seeds} | " + " | ".join(_cell(row, c) for c in columns)
                         + f" | {status} | {provenance} |")
        lines.append("")
    if task_table(task).note:
        lines = lines[:4] + [f"> {task_table(task).note}.", ""] + lines[4:]
    if task == "probe":
        lines += _by_method(rows, columns)
    if chart:
        lines += [f"![{task}]({chart})", ""]
    for extra in ("probe_projection.png", "probe_spectra.png") if task == "probe" else ():
        lines += [f"![{extra}]({extra})", ""]
    return "\n".join(lines)


def method_summary(rows: list[Row], column: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, data) -> (mean, std, n) over the checkpoints' seed means."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        summary = row.summary(column)
        if summary is not None and not row.quoted_source and not math.isnan(summary[0]):
            groups[(row.method, row.data)].append(summary[0])
    return {key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for key, v in sorted(groups.items())}


def _by_method(rows: list[Row], columns: list[str]) -> list[str]:
    summaries = {column: method_summary(rows, column) for column in columns}
    keys = sorted({key for summary in summaries.values() for key in summary})
    lines = ["## By method (mean ± std over checkpoints)", "",
             "| method | data | checkpoints | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 3)]
    for key in keys:
        n = max(summaries[c].get(key, (0, 0, 0))[2] for c in columns)
        cells = [f"{summaries[c][key][0]:.2f} ± {summaries[c][key][1]:.2f}" if key in summaries[c] else "—"
                 for c in columns]
        lines.append(f"| {key[0]} | {key[1]} | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def _probe_figures(rows: list[Row], out: Path) -> None:
    """2-D projections coloured by class and by sub-mode (one checkpoint per method), and the mean
    per-class eigenvalue spectra of every checkpoint side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plotted = []
    for row in rows:
        for run_dir in sorted(row.run_dirs):
            data = _read_json(run_dir / "work" / "plot_data.json")
            if data is not None and row.seeds:
                plotted.append((row, data))
                break
    if not plotted:
        return
    first_per_method = {}
    for row, data in plotted:
        first_per_method.setdefault(row.method, (row, data))
    fig, axes = plt.subplots(len(first_per_method), 2, figsize=(8, 3.6 * len(first_per_method)), squeeze=False)
    for (method, (row, data)), (by_class, by_submode) in zip(first_per_method.items(), axes, strict=True):
        xy = np.asarray(data["projection"], dtype=float)
        by_class.scatter(xy[:, 0], xy[:, 1], c=data["labels"], cmap="tab10", s=6)
        by_class.set_title(f"{method} ({row.checkpoint[-8:]}): colour = class", fontsize=8)
        if data["submodes"] is not None:
            by_submode.scatter(xy[:, 0], xy[:, 1], c=data["submodes"], cmap="tab20", s=6)
            by_submode.set_title(f"{method}: colour = sub-mode (fine label)", fontsize=8)
        for ax in (by_class, by_submode):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("val features, first two principal components", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "probe_projection.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = dict(zip(sorted(first_per_method), plt.get_cmap("tab10").colors, strict=False))
    for row, data in plotted:
        shares = [v for v in data["spectrum"] if v > 1e-10]  # a class of n images has n - 1 non-zero values
        ax.semilogy(range(1, len(shares) + 1), shares, color=colours[row.method], alpha=0.8, label=row.method)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys())
    ax.set_xlabel("eigenvalue index (per class, sorted)")
    ax.set_ylabel("share of the class's variance")
    ax.set_title("mean per-class eigenvalue spectrum of the val features", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "probe_spectra.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _chart(rows: list[Row], task: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [r for r in rows if r.seeds]
    if not plotted:
        return False
    metrics = list(task_table(task).headline)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 1.2 * len(plotted) + 2) * len(metrics), 4.2),
                             squeeze=False)
    labels = [f"{r.method} {r.arch}\n" + ("(quoted)" if r.quoted_source else r.checkpoint_sha256[:8])
              + f"\n{r.framework}/{r.schedule}" for r in plotted]
    colours = ["#bbbbbb" if r.quoted_source else "#e07b39" if r.schedule == "smoke" else "#3b75af" for r in plotted]
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = [r.summary(metric) or (math.nan, 0.0) for r in plotted]
        ax.bar(range(len(plotted)), [v[0] for v in values], yerr=[v[1] for v in values], color=colours, capsize=4)
        ax.set_xticks(range(len(plotted)), labels, fontsize=7)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    title = task_table(task).title
    if any(r.schedule == "smoke" for r in plotted):
        title += "\norange: smoke runs on generated data, NOT benchmark results"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return True


def collect(runs: str | Path = "runs/bench", out: str | Path = "results") -> dict[str, list[Row]]:
    """Write results/<task>.csv, .md and .png for every task with runs; returns the rows per task."""
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[Row]] = defaultdict(list)
    for row in read_quoted(out / "quoted.csv") + gather(runs):
        by_task[row.task].append(row)
    for task, rows in by_task.items():
        if all(r.quoted_source for r in rows):
            continue
        chart = f"{task}.png" if _chart(rows, task, out / f"{task}.png") else None
        if task == "probe":
            _probe_figures(rows, out)
        atomic_write_text(out / f"{task}.csv", _csv(rows, task))
        atomic_write_text(out / f"{task}.md", _markdown(rows, task, chart))
    atomic_write_json(out / "index.json", {task: len(rows) for task, rows in sorted(by_task.items())})
    return dict(by_task)


def print_tables(by_task: dict[str, list[Row]]) -> None:
    for task, rows in by_task.items():
        columns = list(task_table(task).headline)
        print(f"\n{task_table(task).title}")
        for row in rows:
            scores = "  ".join(f"{c} {_cell(row, c):>11}" for c in columns)
            flag = " (smoke: not a benchmark result)" if row.schedule == "smoke" else ""
            print(f"  {row.method:8s} {row.framework:10s} {row.schedule:5s} {scores}  {row.status}{flag}")
        if task == "probe":
            print("  by method (mean ± std over checkpoints):")
            summaries = {c: method_summary(rows, c) for c in columns}
            for key in sorted({k for summary in summaries.values() for k in summary}):
                cells = "  ".join(f"{c} {summaries[c][key][0]:6.2f} ± {summaries[c][key][1]:5.2f}"
                                  for c in columns if key in summaries[c])
                print(f"  {key[0]:8s} {key[1]:10s} n={summaries[columns[0]].get(key, (0, 0, 0))[2]}  {cells}")
