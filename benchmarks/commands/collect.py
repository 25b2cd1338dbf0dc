"""Gather every run directory under `runs/bench` into `results/`: per task a CSV, a Markdown table and a
bar chart, one row per (pretrained checkpoint, framework, schedule), mean ± std over finished seeds.
With pandas: `gather` reads one line per run directory (one seed), `summarize` groups them into the
table's rows (mean, std, count; a single seed has no std and shows its value alone).

Rows come only from the run directories, so a failed run never removes a finished one: a checkpoint
whose runs all failed appears as a failed row with its error. Smoke runs are listed apart and labelled
as pipeline checks on generated data; they are never benchmark numbers. The published results the
benchmarks declare under their references appear as rows marked "published", with their source; other
published numbers may be added as rows marked "quoted" from `results/quoted.csv`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.charts import method_colour, save_figure
from benchmarks.comparisons import (
    BASELINE,
    EXPLAINED,
    PairedDifference,
    markdown_table,
    paired_differences,
    tally,
    tally_lines,
    text_lines,
)
from benchmarks.runner import run_state
from benchmarks.stats import format_mean_spread
from benchmarks.tasks import task_names, task_table
from pretrain.files import atomic_write_json, atomic_write_text, read_json

SMOKE_NOTE = ("smoke schedule on the embedded generated data: shows that the pipeline runs end to end; "
              "NOT a benchmark result, and says nothing about which method transfers better")
UNFINISHED = "unfinished (running, or interrupted: rerun the same command to resume)"
# What makes two run directories seeds of one table row.
ROW_KEY = ["task", "checkpoint_sha256", "framework", "schedule", "data", "opts"]


def _columns(task: str) -> list[tuple[str, str, str]]:
    """(metric group in result.json, metric, column) of a task's table, from its benchmark declaration."""
    return [(c.group, c.metric, c.name) for c in task_table(task).columns]


def gather(runs: Path | list[Path]) -> pd.DataFrame:
    """One line per run directory (one seed of one row): what ran, its outcome and its metrics. `runs`: a
    folder of runs (every run under it) or a list of run directories."""
    run_dirs = sorted(p.parent for p in runs.glob("*/*/*/*/seed*/run.json")) if isinstance(runs, Path) else runs
    lines = []
    for run_dir in run_dirs:
        run_json = run_dir / "run.json"
        outcome = run_state(run_dir)
        result, failure = read_json(run_dir / "result.json"), read_json(run_dir / "failure.json")
        finished = outcome == "finished"
        record = result if finished else failure or read_json(run_json)
        if record is None or record.get("task") not in task_names():
            continue
        line = {
            "task": record["task"], "checkpoint_sha256": record["checkpoint_sha256"],
            "framework": record["framework"], "schedule": record["schedule"],
            "data": "embedded" if record.get("embedded_data") else Path(record.get("data", "")).name,
            "opts": " ".join(record.get("opts") or ()), "quoted_source": "",
            "checkpoint": Path(record["checkpoint"]).name.split(".")[0], "method": record.get("method") or "?",
            "arch": record.get("arch") or "?", "recipe": record.get("recipe") or "",
            "pretrain_seed": record.get("pretrain_seed"),
            "framework_version": record.get("framework_version", ""), "seed": int(record["seed"]),
            "seeds_asked": int(record.get("seeds_asked", 1)), "run_dir": str(run_dir),
            "outcome": outcome,
            "error": "" if finished else (failure or {}).get("error", "unknown error") if outcome == "failed"
            else UNFINISHED,
            "config_sha256": "", "date": "", "batch": "",
        }
        if finished:
            protocol = result.get("protocol") or {}
            line.update(config_sha256=result.get("config_sha256", ""), date=result.get("finished", ""))
            if "global_batch" in protocol:
                line["batch"] = (f"{protocol['global_batch']} = {protocol['world_size']} × "
                                 f"{protocol['per_process_batch']}")
            for group, metric, column in _columns(record["task"]):
                line[column] = float(result["metrics"].get(group, {}).get(metric, math.nan))
        lines.append(line)
    return pd.DataFrame(lines)


def read_quoted(path: Path) -> pd.DataFrame:
    """Published numbers, one per line: task,name,method,arch,framework,schedule,source,<columns...>."""
    if not path.is_file():
        return pd.DataFrame()
    lines = []
    for index, quoted in enumerate(csv.DictReader(io.StringIO(path.read_text()))):
        line = {"task": quoted["task"], "checkpoint_sha256": f"quoted:{index}", "framework": quoted["framework"],
                "schedule": quoted["schedule"], "data": "", "opts": "", "quoted_source": quoted["source"],
                "checkpoint": quoted["name"], "method": quoted["method"], "arch": quoted["arch"],
                "recipe": quoted.get("recipe", ""), "framework_version": "", "seed": 0, "seeds_asked": 1,
                "outcome": "quoted", "error": "", "config_sha256": "", "date": "", "batch": ""}
        for _, _, column in _columns(quoted["task"]):
            line[column] = float(quoted[column]) if quoted.get(column) not in (None, "") else math.nan
        lines.append(line)
    return pd.DataFrame(lines)


PUBLISHED = "published in "


def read_published() -> pd.DataFrame:
    """The published results the benchmarks declare under their references (benchmarks/reference.py), one
    line each, shown in every task table as rows marked published, with their source."""
    from benchmarks.reference import Reference
    from benchmarks.tasks import all_benchmarks

    lines = []
    for benchmark in all_benchmarks():
        for schedule, reference in benchmark.references.items():
            if not isinstance(reference, Reference):
                continue
            for index, published in enumerate(reference.published):
                spread = "; std " + " / ".join(f"{published.std[m]} ({m})" for m in published.std) \
                    if published.std else ""
                key = f"published:{benchmark.framework}:{schedule}:{index}"
                line = {"task": benchmark.name, "checkpoint_sha256": key, "framework": benchmark.framework,
                        "schedule": schedule, "data": "", "opts": "",
                        "quoted_source": f"{PUBLISHED}{published.source}{spread}",
                        "checkpoint": published.ckpt or "—", "method": published.pretraining, "arch": "resnet50",
                        "recipe": "", "framework_version": "", "seed": 0, "seeds_asked": published.trials,
                        "outcome": "quoted", "error": "", "config_sha256": "", "date": "", "batch": ""}
                for _, _, column in _columns(benchmark.name):
                    line[column] = published.metrics.get(column, math.nan)
                lines.append(line)
    return pd.DataFrame(lines)


def summarize(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per (checkpoint, framework, schedule, data, overrides) of `task`: mean, std and count of each
    metric over the finished seeds, the seeds, the failed ones, provenance. Quoted rows first, then the
    benchmark rows, smoke rows last."""
    frame = frame[frame["task"] == task]
    columns = [c for _, _, c in _columns(task)]
    for column in columns:
        if column not in frame:
            frame = frame.assign(**{column: math.nan})
    groups = frame.groupby(ROW_KEY, sort=False)
    first = groups[["checkpoint", "method", "arch", "recipe", "framework_version", "quoted_source"]].first()
    done = frame[frame["outcome"].isin(["finished", "quoted"])].groupby(ROW_KEY, sort=False)
    # a NaN in any seed makes the mean NaN (shown "—"), never the mean of the other seeds
    means, stds = done[columns].mean(skipna=False), done[columns].std(skipna=False)
    rows = first.join(pd.DataFrame({
        "seeds": done["seed"].agg(lambda s: sorted(s)),
        "seeds_asked": groups["seeds_asked"].max(),
        "failed": groups.apply(lambda g: {int(s): e for s, e, o in zip(g["seed"], g["error"], g["outcome"],
                                                                        strict=True)
                                          if o in ("failed", "unfinished")}, include_groups=False),
        "config_sha256": done["config_sha256"].agg(lambda s: sorted({h for h in s if h})),
        "date": done["date"].max(),
        "batches": done["batch"].agg(lambda s: sorted({b for b in s if b})),
        "run_dirs": groups["run_dir"].agg(list) if "run_dir" in frame else None,
    }))
    rows = rows.join(means.add_suffix("_mean")).join(stds.add_suffix("_std"))
    # one seed has no spread: no std (NaN, left empty in the CSV), and the value shown alone
    rows["seeds"] = rows["seeds"].apply(lambda s: s if isinstance(s, list) else [])
    for name in ("config_sha256", "batches"):
        rows[name] = rows[name].apply(lambda v: v if isinstance(v, list) else [])
    rows["date"] = rows["date"].fillna("")
    rows = rows.reset_index()
    rows["status"] = rows.apply(_status, axis=1)
    quoted = rows["quoted_source"] != ""
    order = pd.DataFrame({"quoted": ~quoted, "smoke": rows["schedule"] == "smoke", "schedule": rows["schedule"],
                          "framework": rows["framework"], "method": rows["method"], "checkpoint": rows["checkpoint"]})
    order.loc[quoted, ["smoke", "schedule", "framework", "method", "checkpoint"]] = [False, "", "", "", ""]
    return rows.loc[order.sort_values(list(order.columns), kind="stable").index].reset_index(drop=True)


def _status(row: pd.Series) -> str:
    """finished / failed / quoted, with what is missing: "finished (1 failed, 1 unfinished; 3/5 seeds)"."""
    if row["quoted_source"]:
        return "published" if row["quoted_source"].startswith(PUBLISHED) else "quoted"
    if not row["seeds"]:
        return "failed" if any(e != UNFINISHED for e in row["failed"].values()) else "unfinished"
    unfinished = sum(e == UNFINISHED for e in row["failed"].values())
    parts = [f"{n} {what}" for n, what in ((len(row["failed"]) - unfinished, "failed"), (unfinished, "unfinished"))
             if n]
    missing = f"{len(row['seeds'])}/{row['seeds_asked']} seeds" if len(row["seeds"]) < row["seeds_asked"] else ""
    detail = "; ".join(x for x in (", ".join(parts), missing) if x)
    return f"finished ({detail})" if detail else "finished"


def seeds_cell(row: pd.Series) -> str:
    """How many seeds finished (of how many asked, when fewer) and which: "3/5 (0, 1, 2)"."""
    if row["quoted_source"].startswith(PUBLISHED):
        return f"{row['seeds_asked']} trial(s), published"
    if row["quoted_source"]:
        return "—"
    asked = f"/{row['seeds_asked']}" if len(row["seeds"]) < row["seeds_asked"] else ""
    return f"{len(row['seeds'])}{asked}" + (f" ({', '.join(map(str, row['seeds']))})" if row["seeds"] else "")


def summary(row: pd.Series, column: str) -> tuple[float, float] | None:
    """(mean, std) of `column` over the row's finished seeds (std NaN for one seed); None when none finished."""
    if not row["seeds"]:
        return None
    return float(row[f"{column}_mean"]), float(row[f"{column}_std"])


def _cell(row: pd.Series, column: str) -> str:
    stats = summary(row, column)
    if stats is None or math.isnan(stats[0]):
        return "—"
    return format_mean_spread(*stats, least=1)


def _csv(rows: pd.DataFrame, task: str) -> str:
    columns = [c for _, _, c in _columns(task)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["checkpoint", "method", "arch", "recipe", "data", "framework", "framework_version", "schedule",
                     "opts", "batch (global = processes x per process)",
                     "status", "n_seeds", "seeds_asked", "seeds",
                     *[f"{c}_{s}" for c in columns for s in ("mean", "std")],
                     "checkpoint_sha256", "config_sha256", "date", "error", "source"])
    for _, row in rows.iterrows():
        stats = []
        for column in columns:
            cell = summary(row, column)
            stats += ["", ""] if cell is None else [f"{v:.3f}" if not math.isnan(v) else "" for v in cell]
        quoted = bool(row["quoted_source"])
        seeds = " ".join(map(str, row["seeds"])) if not quoted else ""
        counts = ["", ""] if quoted else [len(row["seeds"]), row["seeds_asked"]]
        writer.writerow([row["checkpoint"], row["method"], row["arch"], row["recipe"], row["data"], row["framework"],
                         row["framework_version"], row["schedule"], row["opts"], "; ".join(row["batches"]),
                         row["status"], *counts, seeds, *stats, "" if quoted else row["checkpoint_sha256"],
                         " ".join(row["config_sha256"]), row["date"],
                         "; ".join(f"seed {s}: {e}" for s, e in sorted(row["failed"].items())), row["quoted_source"]])
    return out.getvalue()


def _markdown(rows: pd.DataFrame, task: str, chart: str | None, figures: list[str],
              differences: list[PairedDifference], baseline: str) -> str:
    columns = [c for _, _, c in _columns(task)]
    lines = [f"# {task_table(task).title}", "", "Generated by `python -m benchmarks collect` from the run directories; "
             "mean ± std over the finished seeds (seeds: how many finished, of how many asked when fewer, and "
             "which; one seed shows its value alone). Do not edit by hand.", ""]
    quoted = rows["quoted_source"] != ""
    smoke = rows["schedule"] == "smoke"
    sections = (("Published results (not run here)", quoted), ("Benchmark runs", ~quoted & ~smoke),
                ("Smoke runs", ~quoted & smoke))
    for title, selected in sections:
        part = rows[selected]
        if part.empty:
            continue
        lines += [f"## {title}", ""]
        if title == "Smoke runs":
            lines += [f"> {SMOKE_NOTE}.", ""]
        lines += ["| checkpoint | method | arch | pretraining | data | framework | schedule | batch (global = "
                  "processes × per process) | seeds | " + " | ".join(columns) + " | status | provenance |",
                  "|" + "---|" * (len(columns) + 11)]
        for _, row in part.iterrows():
            quoted = bool(row["quoted_source"])
            published = row["quoted_source"].startswith(PUBLISHED)
            if quoted:
                provenance = row["quoted_source"] if published else f"quoted from {row['quoted_source']}"
            else:
                provenance = (f"ckpt `{row['checkpoint_sha256'][:12]}`, {row['framework']} {row['framework_version']}, "
                              f"config `{'/'.join(h[:8] for h in row['config_sha256']) or '—'}`, "
                              f"{row['date'][:10] or '—'}")
            status = row["status"]
            if row["failed"]:
                status += ": " + "; ".join(f"seed {seed}: {error.splitlines()[0][:120]}"
                                           for seed, error in sorted(row["failed"].items()))
            name = f"*{row['checkpoint']} ({'published' if published else 'quoted'})*" if quoted else row["checkpoint"]
            if row["opts"]:
                name += f" (opts: {row['opts']})"
            lines.append(f"| {name} | {row['method']} | {row['arch']} | {row['recipe'] or '—'} | "
                         f"{row['data'] or '—'} | {row['framework']} | {row['schedule']} | "
                         f"{'; '.join(row['batches']) or '—'} | "
                         f"{seeds_cell(row)} | " + " | ".join(_cell(row, c) for c in columns)
                         + f" | {status} | {provenance} |")
        lines.append("")
    if task_table(task).note:
        lines = lines[:4] + [f"> {task_table(task).note}.", ""] + lines[4:]
    if task_table(task).by_method:
        lines += _by_method(rows, columns)
    lines += _differences_section(differences, task, baseline)
    if chart:
        lines += [f"![{task}]({chart})", ""]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def _differences_section(differences: list[PairedDifference], task: str, baseline: str) -> list[str]:
    lines = [f"## Difference to {baseline}, paired by seed", ""]
    if not differences:
        return lines + [f"No benchmark runs of {baseline} and another method in one setting (runs on the embedded "
                        "generated data, smoke runs among them, are never compared).", ""]
    return lines + [f"{EXPLAINED}. Runs pair when they share the fine-tuning seed and, between methods, the "
                    "pretraining seed; each metric here is higher-is-better.", "",
                    *markdown_table(differences, task_table(task).claims), ""]


def task_differences(frame: pd.DataFrame, task: str, baseline: str = BASELINE) -> list[PairedDifference]:
    """The paired differences to `baseline` in the task's headline metrics, from gathered run lines."""
    if frame.empty:
        return []
    ours = frame[(frame["task"] == task) & (frame["outcome"] == "finished") & (frame["quoted_source"] == "")]
    return paired_differences(ours, task, task_table(task).compared, baseline)


def write_summary(differences: dict[str, list[PairedDifference]], out: Path, baseline: str) -> str:
    """results/summary.md: per method, wins / losses / ties against the baseline over every task and setting
    (each task's first headline metric), with a sign test where there are enough settings."""
    first = [d for task, found in sorted(differences.items()) for d in found
             if task not in task_names() or d.metric == task_table(task).compared[0]]
    lines = [f"# Across tasks: each method against {baseline}", "",
             "Generated by `python -m benchmarks collect`. One setting is a task in one framework, schedule, data "
             "and overrides (and each real-data tier in results/proxy_*.csv), in its first headline metric; a "
             "setting counts as better or worse when its paired 95 % interval excludes zero. The sign test counts "
             "the directions of the mean differences, so settings in different metrics pool. Do not edit by hand.",
             ""]
    if not first:
        lines += [f"No benchmark runs of {baseline} and another method in one setting yet.", ""]
    else:
        lines += [*tally_lines(tally(first), baseline), "", "| task | framework | schedule | data | method | metric | "
                  "pairs | Δ mean | 95 % CI | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {d.task} | {d.setting[0]} | {d.setting[1]} | {d.setting[2] or '—'} | {d.method} | {d.metric} | "
                  f"{d.comparison.pairs} | {'—' if not d.comparison.pairs else f'{d.comparison.mean:+.2f}'} | "
                  f"{d.comparison.interval()} | {d.comparison.verdict} |" for d in first]
        lines.append("")
    text = "\n".join(lines)
    atomic_write_text(out / "summary.md", text)
    return text


def method_summary(rows: pd.DataFrame, column: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, data) -> (mean, std, n) over the checkpoints' seed means."""
    ours = rows[(rows["quoted_source"] == "") & rows["seeds"].apply(bool)]
    means = ours.assign(value=ours[f"{column}_mean"]).dropna(subset=["value"])
    stats = means.groupby(["method", "data"])["value"].agg(["mean", "std", "count"])  # std NaN for one
    return {key: (float(s["mean"]), float(s["std"]), int(s["count"])) for key, s in stats.sort_index().iterrows()}


def _mean_std(mean: float, std: float) -> str:
    return format_mean_spread(mean, std)


def _by_method(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    summaries = {column: method_summary(rows, column) for column in columns}
    keys = sorted({key for summary in summaries.values() for key in summary})
    lines = ["## By method (mean ± std over checkpoints)", "",
             "| method | data | checkpoints | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 3)]
    for key in keys:
        n = max(summaries[c].get(key, (0, 0, 0))[2] for c in columns)
        cells = [_mean_std(*summaries[c][key][:2]) if key in summaries[c] else "—" for c in columns]
        lines.append(f"| {key[0]} | {key[1]} | {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def _chart(rows: pd.DataFrame, task: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [row for _, row in rows.iterrows() if row["seeds"]]
    if not plotted:
        return False
    metrics = list(task_table(task).headline)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 1.2 * len(plotted) + 2) * len(metrics), 4.2),
                             squeeze=False)
    labels = [f"{r['method']} {r['arch']}\n" + ("(quoted)" if r["quoted_source"] else r["checkpoint_sha256"][:8])
              + f"\n{r['framework']}/{r['schedule']}" for r in plotted]
    colours = [method_colour(r["method"]) for r in plotted]
    # smoke runs hatched, quoted rows pale: a method keeps its colour in every chart
    hatches = ["//" if r["schedule"] == "smoke" else "" for r in plotted]
    alphas = [0.45 if r["quoted_source"] else 1.0 for r in plotted]
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = [summary(r, metric) or (math.nan, math.nan) for r in plotted]
        spread = [0.0 if math.isnan(v[1]) else v[1] for v in values]
        bars = ax.bar(range(len(plotted)), [v[0] for v in values], yerr=spread, color=colours, capsize=4,
                      edgecolor="black", linewidth=0.5)
        for bar, hatch, alpha in zip(bars, hatches, alphas, strict=True):
            bar.set_hatch(hatch)
            bar.set_alpha(alpha)
        ax.set_xticks(range(len(plotted)), labels, fontsize=7)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    title = task_table(task).title + "\none colour per method" + (
        "; pale: quoted from the source named in the table" if any(r["quoted_source"] for r in plotted) else "")
    if any(r["schedule"] == "smoke" for r in plotted):
        title += "\nhatched: smoke runs on generated data, NOT benchmark results"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True


@dataclass
class Collected:
    """What `collect` wrote: per task, the table rows and the paired differences to the baseline."""

    rows: dict[str, pd.DataFrame]
    differences: dict[str, list[PairedDifference]]
    baseline: str
    summary: str  # results/summary.md


def collect(runs: str | Path = "runs/bench", out: str | Path = "results", baseline: str = BASELINE) -> Collected:
    """Write results/<task>.csv, .md and .png for every task with runs, and results/summary.md (every method
    against `baseline`, a method or a checkpoint name, across tasks)."""
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat([read_published(), read_quoted(out / "quoted.csv"), gather(runs)], ignore_index=True)
    by_task: dict[str, pd.DataFrame] = {}
    differences: dict[str, list[PairedDifference]] = {}
    for task in dict.fromkeys(frame["task"]) if not frame.empty else ():
        rows = summarize(frame, task)
        if (rows["quoted_source"] != "").all():
            continue  # published or quoted numbers alone make no table
        by_task[task] = rows
        differences[task] = task_differences(frame, task, baseline)
        chart = f"{task}.png" if _chart(rows, task, out / f"{task}.png") else None
        figures = task_table(task).figures(rows, out) if task_table(task).figures else []
        atomic_write_text(out / f"{task}.csv", _csv(rows, task))
        atomic_write_text(out / f"{task}.md", _markdown(rows, task, chart, figures, differences[task], baseline))
    atomic_write_json(out / "index.json", {task: len(rows) for task, rows in sorted(by_task.items())})
    tiers = {f"proxy {path.stem.removeprefix('proxy_')}": proxy_differences(path, baseline)
             for path in sorted(out.glob("proxy_*.csv"))}
    summary = write_summary({**differences, **tiers}, out, baseline)
    return Collected(by_task, differences, baseline, summary)


def proxy_differences(path: Path, baseline: str = BASELINE) -> list[PairedDifference]:
    """A real-data tier's table (results/proxy_<dataset>.csv, one line per pretraining run) in fine linear top-1,
    paired by pretraining seed (one probe per backbone)."""
    from benchmarks.commands.proxy import tier_frame

    dataset = path.stem.removeprefix("proxy_")
    runs = [{"method": line["method"], "seed": int(line["seed"]), "checkpoint": line["checkpoint"],
             "metrics": {"linear_top1": float(line["linear_top1"]) if line["linear_top1"] else None}}
            for line in csv.DictReader(io.StringIO(path.read_text()))]
    return paired_differences(tier_frame(runs, dataset), f"proxy {dataset}", ["linear_top1"], baseline)


def print_tables(collected: Collected) -> None:
    for task, rows in collected.rows.items():
        columns = list(task_table(task).headline)
        print(f"\n{task_table(task).title}")
        for _, row in rows.iterrows():
            scores = "  ".join(f"{c} {_cell(row, c):>11}" for c in columns)
            flag = " (smoke: not a benchmark result)" if row["schedule"] == "smoke" else ""
            print(f"  {row['method']:8s} {row['framework']:10s} {row['schedule']:5s} {scores}  {row['status']}{flag}")
        if task_table(task).by_method:
            print("  by method (mean ± std over checkpoints):")
            summaries = {c: method_summary(rows, c) for c in columns}
            for key in sorted({k for summary in summaries.values() for k in summary}):
                cells = "  ".join(f"{c} {_mean_std(*summaries[c][key][:2])}" for c in columns if key in summaries[c])
                print(f"  {key[0]:8s} {key[1]:10s} n={summaries[columns[0]].get(key, (0, 0, 0))[2]}  {cells}")
        if collected.differences[task]:
            print(f"  paired differences to {collected.baseline} (95 % CI; detectable with 80 % power):")
            print("\n".join(text_lines(collected.differences[task], task_table(task).claims)))
