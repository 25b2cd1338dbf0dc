"""The real-data coarse-to-fine tier: pretrain SL, SL-MLP and LOOK on the coarse labels of a real dataset
with several seeds, probe the frozen backbones on the fine classes, and write one table.

It asks the papers' question at a size that runs on a CPU: pretraining on coarse labels rewards a
backbone that collapses each coarse class; the fine classes inside it are what intra-class variation
is for. A protocol file `benchmarks/configs/proxy/<dataset>.yaml` fixes the data (how many images a
class), the seeds, and each method's pretraining config with the overrides that size it; nothing is
chosen by looking at the fine labels of the test split (see the README).

    python -m benchmarks proxy --dataset fmnist|fmnist-full|cifar100|imagefolder [--source PATH] [--seeds 0 1 2]

Runs go to `runs/proxy/<dataset>/` (pretraining runs resume, finished probes are skipped); the table
to `results/proxy_<dataset>.{md,csv}`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.comparisons import BASELINE
from pretrain.checkpoint import utc_now
from pretrain.config import Config, config_hash, load_config, load_yaml
from pretrain.errors import UserError
from pretrain.files import atomic_write_json, atomic_write_text
from pretrain.schema import build_dataclass

PROTOCOLS = Path(__file__).parents[1] / "configs" / "proxy"
REPO = Path(__file__).resolve().parents[2]
# (metric group in result.json, metric, column, what it is)
COLUMNS = [
    ("probe", "linear_top1", "linear_top1", "fine linear-probe top-1 (%)"),
    ("probe", "knn_top1", "knn_top1", "fine kNN top-1 (%), k = 20"),
    ("diagnostics", "knn_agreement", "knn_agree", "coarse kNN label agreement (%)"),
    ("diagnostics", "within_between", "within_between", "within / between coarse-class variance"),
    ("diagnostics", "effective_rank", "eff_rank", "mean effective rank of a coarse class"),
    ("diagnostics", "submode_separability", "fine_sep", "fine-class 5-NN accuracy inside a coarse class (%)"),
]
# the many-shot linear protocol on the fine classes, where the protocol names the dataset (`cls_linear`)
CLS_LINEAR = ("cls_linear", "fine top-1 (%) of the many-shot linear protocol (cls-linear, benchmarks/frameworks/"
              "cls_linear.py): the tier's training images with fine labels, C among 45 values chosen on 20 % of "
              "them, refitted, scored on every test image; images at the pretraining crop size")


# images a fine class in each split of the datasets the tier reads (train, test): what `null` asks for
FULL_PER_CLASS = {"fmnist": (6000, 1000, 10), "cifar100": (500, 100, 100)}  # (train, test, fine classes)


@dataclass
class ProxyProtocol:
    """One real-data tier: which data, which seeds, how every method is pretrained."""

    dataset: str
    data: str = ""  # which reader prepares the data (fmnist, cifar100, imagefolder); default: `dataset`
    description: str = ""
    train_per_class: int | None = None  # images a fine class (None: all)
    val_per_class: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: dict[str, str] = field(default_factory=dict)  # method -> pretraining config (repo-relative)
    overrides: list[str] = field(default_factory=list)  # `key=value` for every pretraining run
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    # the cls-linear dataset the tier's data is (benchmarks/data/classification.py): each backbone is also scored
    # by the many-shot linear protocol on it, on the tier's training images and every test image
    cls_linear: str | None = None


def load_protocol(dataset: str) -> ProxyProtocol:
    path = PROTOCOLS / f"{dataset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROTOCOLS.glob("*.yaml")))
        raise UserError(f"no proxy protocol for dataset '{dataset}'; known: {known}")
    protocol = build_dataclass(ProxyProtocol, load_yaml(path), where="proxy.")
    unknown = set(protocol.method_overrides) - set(protocol.methods)
    if unknown or BASELINE not in protocol.methods:
        raise UserError(f"{path}: method_overrides for unknown methods {sorted(unknown)}, or no '{BASELINE}' "
                        "baseline in methods")
    if protocol.cls_linear is not None and (protocol.data or protocol.dataset, protocol.cls_linear) != ("fmnist",
                                                                                                     "fmnist"):
        raise UserError(f"{path}: cls_linear: fmnist is the one cls-linear dataset a tier reads (the fmnist tiers: "
                        f"its source is their idx folder); got {protocol.cls_linear!r}")
    return protocol


def cls_linear_root(protocol: ProxyProtocol, source: str | Path | None, data_dir: Path) -> Path:
    """The folder cls-linear reads the tier's dataset under: the parent of its source folder when that has the
    dataset's folder name (Debian's /usr/share/datasets/fashion-mnist), else a link to it under `data_dir`."""
    from benchmarks.data.classification import DATASETS
    from benchmarks.data.fashion_mnist import DEBIAN_DIR

    folder = Path(source) if source else DEBIAN_DIR
    where = DATASETS[protocol.cls_linear].where
    if folder.name == where:
        return folder.parent
    link = data_dir / "cls-linear-sources" / where
    if not (link.is_symlink() and link.resolve() == folder.resolve()):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return link.parent


def cls_linear_opts(protocol: ProxyProtocol, config: Config) -> list[str]:
    """cls-linear's options for a tier backbone: the dataset, the pretraining crop size, the tier's training
    images (the first `train_per_class` of each class, as pretraining saw them)."""
    opts = [f"datasets={protocol.cls_linear}", f"image_size={config.data.image_size}"]
    return opts + ([f"train_per_class={protocol.train_per_class}"] if protocol.train_per_class else [])


def prepare_data(protocol: ProxyProtocol, source: str | Path | None, data_dir: Path) -> Path:
    """The coarse-to-fine ImageFolder (`train/`, `val/`, `coarse_map.csv`) the tier runs on."""
    reader = protocol.data or protocol.dataset
    if reader == "fmnist":
        from benchmarks.data.fashion_mnist import DEBIAN_DIR, prepare_fashion_mnist

        return prepare_fashion_mnist(data_dir, Path(source) if source else DEBIAN_DIR, protocol.train_per_class,
                                     protocol.val_per_class)
    if reader == "cifar100":
        from benchmarks.data.cifar100 import prepare_cifar100

        if source is None:
            raise UserError("CIFAR-100: give the archive with --source (SOURCE=) cifar-100-python.tar.gz; it "
                            "cannot be downloaded from here (https://www.cs.toronto.edu/~kriz/cifar.html)")
        return prepare_cifar100(data_dir, Path(source), protocol.train_per_class, protocol.val_per_class)
    if source is None:
        raise UserError("imagefolder: give --source DIR holding train/<fine class>/, val/<fine class>/ and "
                        "coarse_map.csv (fine,coarse)")
    root = Path(source)
    missing = [name for name in ("train", "val", "coarse_map.csv") if not (root / name).exists()]
    if missing:
        raise UserError(f"{root}: missing {', '.join(missing)} (expected train/, val/ and coarse_map.csv)")
    return root


def pretraining_config(protocol: ProxyProtocol, method: str, seed: int, data_root: Path, runs: Path,
                       extra: list[str]) -> Config:
    overrides = [*protocol.overrides, *protocol.method_overrides.get(method, []), *extra,
                 f"train.seed={seed}", f"data.coarse_map={data_root / 'coarse_map.csv'}"]
    config = load_config(REPO / protocol.methods[method], overrides)
    config.data.root = str(data_root / "train")
    config.name = f"{method}_seed{seed}"
    # the run directory names the settings, so that other settings never resume (or reuse) this run
    config.out_dir = str(runs / "pretrain" / f"{config.name}-{config_hash(config.to_dict())[:8]}")
    return config


def _read_meta(path: Path) -> dict[str, Any]:
    from pretrain.checkpoint import load_weights

    return load_weights(path)["meta"]


def run_proxy(dataset: str, source: str | Path | None = None, seeds: list[int] | None = None,
              out: str | Path = "runs/proxy", results: str | Path = "results", data_dir: str | Path = "data/proxy",
              overrides: list[str] | None = None, command: str | None = None,
              per_class: tuple[int | None, int | None] | None = None, cls_linear_schedule: str = "many-shot"
              ) -> Path:
    """Pretrain every method with every seed, probe each backbone (and score it with cls-linear where the
    protocol names a dataset for it), write the table; returns the .md path. `per_class` (train, val) replaces
    the protocol's image counts (a smaller or larger version of the tier)."""
    from benchmarks.runner import run_benchmark
    from pretrain.trainer import train

    started = time.perf_counter()
    protocol = load_protocol(dataset)
    declared = declared_images(protocol)  # before a smaller version replaces the counts
    if per_class is not None:
        train_count, val_count = per_class
        protocol.train_per_class = protocol.train_per_class if train_count is None else train_count
        protocol.val_per_class = protocol.val_per_class if val_count is None else val_count
    seeds = list(protocol.seeds if seeds is None else seeds)
    extra = list(overrides or [])
    data_root = prepare_data(protocol, source, Path(data_dir))
    runs = Path(out) / data_root.name  # one folder per dataset version
    configs = {(m, s): pretraining_config(protocol, m, s, data_root, runs, extra)
               for s in seeds for m in protocol.methods}  # every config is checked before anything trains
    cls_root = cls_linear_root(protocol, source, Path(data_dir)) if protocol.cls_linear else None
    records, timings = [], {"pretrain_s": 0.0, "probe_s": 0.0, "pretrain_runs": 0, "probe_runs": 0,
                            "cls_linear_s": 0.0, "cls_linear_runs": 0}
    timed_image_epochs = timed_probe_images = 0
    for (method, seed), config in configs.items():
        print(f"== {dataset}: {method}, seed {seed} ({config.out_dir})", flush=True)
        reused = (Path(config.out_dir) / "export").is_dir()
        tick = time.perf_counter()
        exported = train(config)
        meta = _read_meta(exported)
        if not reused:
            timings["pretrain_s"] += time.perf_counter() - tick
            timings["pretrain_runs"] += 1
            timed_image_epochs += meta["dataset_info"]["num_samples"] * meta["epochs"]
        tick, wall_tick = time.perf_counter(), time.time()
        probe_dir = run_benchmark("probe", exported, "frozen", "standard", seed=0, data=data_root,
                                  out=runs / "probe")
        if (probe_dir / "result.json").stat().st_mtime >= wall_tick:  # not a finished probe found again
            timings["probe_s"] += time.perf_counter() - tick
            timings["probe_runs"] += 1
            timed_probe_images += count_images(data_root)
        result = json.loads((probe_dir / "result.json").read_text())
        metrics = {column: result["metrics"].get(group, {}).get(metric) for group, metric, column, _ in COLUMNS}
        cls_dir = None
        if cls_root is not None:
            tick, wall_tick = time.perf_counter(), time.time()
            cls_dir = run_benchmark("cls-linear", exported, "frozen", cls_linear_schedule, seed=0, data=cls_root,
                                    out=runs / "cls-linear", opts=cls_linear_opts(protocol, config))
            if (cls_dir / "result.json").stat().st_mtime >= wall_tick:
                timings["cls_linear_s"] += time.perf_counter() - tick
                timings["cls_linear_runs"] += 1
            cls_result = json.loads((cls_dir / "result.json").read_text())
            metrics[CLS_LINEAR[0]] = cls_result["metrics"]["cls"][protocol.cls_linear]
        records.append({"method": method, "seed": seed, "checkpoint": exported.name,
                        "pretrain_dir": config.out_dir, "probe_dir": str(probe_dir),
                        "cls_linear_dir": None if cls_dir is None else str(cls_dir), "metrics": metrics,
                        "training": meta.get("training", {}), "schedule": meta.get("schedule", {}),
                        "final_train_metrics": _final_epoch_metrics(Path(config.out_dir) / "log.jsonl")})
    timings["wall_s"] = time.perf_counter() - started
    timings["device"] = device_name()
    if per_class is not None and declared and timed_image_epochs and timed_probe_images:  # a smaller version
        train_images, val_images = declared
        epochs = pretraining_config(protocol, BASELINE, 0, data_root, runs, []).schedule.epochs  # not --set's
        runs_declared = len(protocol.methods) * len(protocol.seeds)
        timings["declared_estimate_s"] = runs_declared * (
            timings["pretrain_s"] / timed_image_epochs * train_images * epochs
            + timings["probe_s"] / timed_probe_images * (train_images + val_images))
        print(f"the protocol as declared ({runs_declared} runs of {train_images} training images x {epochs} epochs, "
              f"{val_images} test images) would take about {timings['declared_estimate_s'] / 60:.1f} min on "
              f"{timings['device']} at the rate measured here (pretraining and probes; not the cls-linear runs)",
              flush=True)
    report = {"dataset": dataset, "protocol": protocol.__dict__, "data": str(data_root),
              "data_record": json.loads((data_root / "dataset.json").read_text())
              if (data_root / "dataset.json").is_file() else None,
              "seeds": seeds, "overrides": extra, "cls_linear_schedule": cls_linear_schedule if cls_root else None,
              "command": command or "python -m benchmarks " + shlex.join(sys.argv[1:]),
              "finished": utc_now(), "cpu_count": os.cpu_count(), "timings": timings,
              "configs": {f"{m} seed {s}": c.to_dict() for (m, s), c in configs.items()}, "runs": records}
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    atomic_write_json(runs / "report.json", report)
    table = write_tables(report, results / f"proxy_{dataset}")
    print(table.read_text())
    return table


def declared_images(protocol: ProxyProtocol) -> tuple[int, int] | None:
    """(training images, test images) that the protocol file asks for, where the dataset's sizes are known."""
    full = FULL_PER_CLASS.get(protocol.data or protocol.dataset)
    if full is None:
        return None
    train, val, classes = full
    return ((protocol.train_per_class or train) * classes, (protocol.val_per_class or val) * classes)


def count_images(data_root: Path) -> int:
    """Images in the tier's train/ and val/ class folders."""
    return sum(1 for split in ("train", "val") for path in (data_root / split).glob("*/*") if path.is_file())


def device_name() -> str:
    """What the runs trained on: the GPU's name, or the CPU's core count."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"


def _final_epoch_metrics(log: Path) -> dict[str, float]:
    """Means of the last epoch's logged training metrics (loss, top1 or p_mean)."""
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    steps = [r for r in rows if "loss" in r and "event" not in r]
    if not steps:
        return {}
    last = [r for r in steps if r["epoch"] == steps[-1]["epoch"]]
    keys = [k for k in last[0] if k not in ("step", "epoch", "lr")]
    return {k: statistics.fmean(r[k] for r in last) for k in keys}


def _mean_std(values: list[float]) -> str:
    from benchmarks.stats import mean_and_spread

    values = [v for v in values if v is not None]
    return mean_and_spread(values) if values else "—"


def tier_frame(runs: list[dict[str, Any]], dataset: str) -> Any:
    """The tier's runs as the paired comparisons read them: one probe (seed 0) per pretraining seed."""
    import pandas as pd

    return pd.DataFrame([{"framework": "frozen", "schedule": "proxy", "data": dataset, "opts": "", "arch": "",
                          "method": r["method"], "checkpoint": r["checkpoint"], "pretrain_seed": r["seed"], "seed": 0,
                          **r["metrics"]} for r in runs])


def _setup_line(report: dict[str, Any]) -> str:
    """Backbone, stem, images and schedule of the runs, from their resolved configs."""
    config = next(iter(report["configs"].values()), {})
    model, data, schedule = config.get("model", {}), config.get("data", {}), config.get("schedule", {})
    images = (report.get("data_record") or {}).get("images", {})

    def count(split: str) -> str:
        per_class = sorted(set(images.get(split, {}).values()))
        total = sum(images.get(split, {}).values())
        return f"{total} {split}" + (f" ({per_class[0]} a class)" if len(per_class) == 1 else "")

    counts = ", ".join(count(split) for split in ("train", "val")) if images else "as in the data folder"
    return (f"Backbone {model.get('arch')} with the {model.get('stem', 'imagenet')} stem, {data.get('image_size')} px "
            f"crops ({'decoded once, augmented on the device' if data.get('in_memory') else 'from image files'}); "
            f"images: {counts}; {schedule.get('epochs')} epochs.")


def write_tables(report: dict[str, Any], stem: Path) -> Path:
    """`<stem>.md` (by method, differences to SL paired by seed, every run) and `<stem>.csv` (every run)."""
    runs = report["runs"]
    from benchmarks.comparisons import EXPLAINED, markdown_table, paired_differences

    methods = list(dict.fromkeys(r["method"] for r in runs))
    described = [(c, what) for _, _, c, what in COLUMNS]
    if any(CLS_LINEAR[0] in r["metrics"] for r in runs):
        described.insert(1, CLS_LINEAR)  # beside the probe's linear top-1: the same question, the standard protocol
    columns = [c for c, _ in described]
    for r in runs:  # reports written before the column existed
        r["metrics"].setdefault(CLS_LINEAR[0], None)
    seeds = sorted({r["seed"] for r in runs})
    timings = report["timings"]
    protocol = report["protocol"]
    first = runs[0]["schedule"] if runs else {}
    lines = [f"# Real-data coarse→fine transfer: {report['dataset']}", "",
             f"{protocol.get('description', '')}".strip(), "",
             f"Command: `{report['command']}` — finished {report['finished'][:16].replace('T', ' ')} UTC on "
             f"{timings.get('device') or str(report['cpu_count']) + ' CPU cores'}, "
             f"{timings['wall_s'] / 60:.1f} min wall in all "
             f"({timings['pretrain_runs']} pretraining runs in {timings['pretrain_s'] / 60:.1f} min, "
             f"{timings['probe_runs']} probes in {timings['probe_s'] / 60:.1f} min"
             + (f", {timings['cls_linear_runs']} cls-linear runs in {timings['cls_linear_s'] / 60:.1f} min"
                if CLS_LINEAR[0] in columns else "")
             + "; runs reused from earlier invocations are not timed)." + (
                 f" The protocol as declared would take about {timings['declared_estimate_s'] / 60:.0f} min there "
                 "at the measured rate (pretraining and probes; not the cls-linear runs)."
                 if "declared_estimate_s" in timings else ""), "",
             _setup_line(report), "",
             f"Pretraining seeds {', '.join(map(str, seeds))}; per run: global batch {first.get('global_batch')}, "
             f"peak lr {first.get('peak_lr')} (lr_per_256 {first.get('lr_per_256')}), "
             f"{first.get('total_steps')} steps with {first.get('warmup_steps')} warmup. The probe: frozen "
             "backbone, fine labels; linear probe with its L2 penalty chosen on 20 % of the fine *train* split, "
             "kNN k = 20; the diagnostics use the coarse classes of the val split."
             + (f" {CLS_LINEAR[0]}: {CLS_LINEAR[1]}." if CLS_LINEAR[0] in columns else "")
             + (" The cls-linear runs used the smoke schedule (12 of the 45 values of C, at most 100 iterations "
                "a fit): a quick check, not the protocol." if report.get("cls_linear_schedule") == "smoke" else ""),
             "",
             "## By method (mean ± std over pretraining seeds)", "",
             "| method | seeds | " + " | ".join(columns) + " | loss spikes (all seeds) | final train loss |",
             "|" + "---|" * (len(columns) + 4)]
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        spikes = sum(r["training"].get("loss_spikes", 0) for r in mine)
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(_mean_std([r["metrics"][c] for r in mine])
                                                              for c in columns)
                     + f" | {spikes} | {_mean_std([r['final_train_metrics'].get('loss') for r in mine])} |")
    compared = columns[:4] if CLS_LINEAR[0] in columns else columns[:3]  # the fine accuracies, coarse agreement
    differences = paired_differences(tier_frame(runs, report["dataset"]), f"proxy {report['dataset']}", compared)
    lines += ["", f"## Difference to {BASELINE}, paired by pretraining seed", "",
              f"{EXPLAINED}. Runs pair when they share the pretraining seed; one probe per backbone, so the "
              "interval covers the spread of pretraining seeds, the probe's own randomness included.", "",
              *markdown_table(differences, settings=False)]
    lines += ["", "## Every run", "",
              "| method | seed | checkpoint | " + " | ".join(columns) + " | loss spikes | largest loss (step) |",
              "|" + "---|" * (len(columns) + 5)]
    for r in runs:
        training = r["training"]
        largest = (f"{training['max_loss']:.3g} ({training['max_loss_step']})"
                   if training.get("max_loss") is not None else "—")
        lines.append(f"| {r['method']} | {r['seed']} | {r['checkpoint']} | "
                     + " | ".join("—" if r["metrics"][c] is None else f"{r['metrics'][c]:.2f}" for c in columns)
                     + f" | {training.get('loss_spikes', '—')} | {largest} |")
    lines += ["", "Columns: " + "; ".join(f"{c} = {what}" for c, what in described) + ".", ""]
    md = stem.with_suffix(".md")
    atomic_write_text(md, "\n".join(lines))

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["dataset", "method", "seed", "checkpoint", *columns, "loss_spikes", "max_loss", "max_loss_step",
                     "peak_lr", "global_batch", "total_steps", "pretrain_dir", "probe_dir", "cls_linear_dir"])
    for r in runs:
        training, schedule = r["training"], r["schedule"]
        writer.writerow([report["dataset"], r["method"], r["seed"], r["checkpoint"],
                         *["" if r["metrics"][c] is None else f"{r['metrics'][c]:.3f}" for c in columns],
                         training.get("loss_spikes", ""), training.get("max_loss", ""),
                         training.get("max_loss_step", ""), schedule.get("peak_lr", ""),
                         schedule.get("global_batch", ""), schedule.get("total_steps", ""), r["pretrain_dir"],
                         r["probe_dir"], r.get("cls_linear_dir") or ""])
    atomic_write_text(stem.with_suffix(".csv"), out.getvalue())
    return md
