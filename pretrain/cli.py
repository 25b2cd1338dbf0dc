"""`python -m pretrain ...`: train a backbone (here, or as a job on SLURM), write the embedded dataset, list methods."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pretrain.errors import report_user_errors
from pretrain.slurm import add_slurm_arguments


def _config(args: argparse.Namespace):
    from pretrain.config import load_config

    config = load_config(args.config, args.set)
    # Paths are set as given, not parsed as YAML like --set values (a folder named `null` or `yes`).
    if args.data is not None:
        config.data.root = args.data
    if args.out is not None:
        config.out_dir = args.out
    return config


def _train(args: argparse.Namespace) -> int:
    from pretrain.collector import imports_without_collection

    with imports_without_collection():
        from pretrain.trainer import train

    train(_config(args), resume_from=args.resume)
    return 0


def _submit(args: argparse.Namespace) -> int:
    import submitit  # before anything opens a log file (see pretrain/slurm.py)

    from pretrain.errors import UserError
    from pretrain.slurm import job_error, slurm_resources
    from pretrain.submit import submit

    config = _config(args)
    job = submit(config, args.executor, args.nodes, args.nproc_per_node, slurm_resources(args))
    where = f"{args.nodes} node(s) x {args.nproc_per_node} process(es)"
    logs = Path(job.paths.stdout).parent
    if args.executor == "slurm":
        print(f"submitted SLURM job {job.job_id} ({where}); logs in {logs}; run directory {config.run_dir()}. "
              "A preempted or timed-out job is requeued and resumes from its last checkpoint.")
        return 0
    print(f"running job {job.job_id} here ({where}); logs in {logs}", flush=True)
    try:
        exported = job.results()[0]  # rank 0's: the others export nothing
    except submitit.core.utils.FailedJobError as e:
        raise UserError(f"the job failed: {job_error(e)} (full log in {logs})") from None
    print(f"exported backbone: {exported}")
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from pretrain.config import GeneratedDataConfig, deep_merge, parse_override
    from pretrain.data.generated import generate
    from pretrain.schema import build_dataclass

    values: dict = {}
    for text in args.set:
        values = deep_merge(values, parse_override(text))
    root = generate(build_dataclass(GeneratedDataConfig, values, where="generated."), args.out)
    print(root)
    return 0


def _methods(args: argparse.Namespace) -> int:
    import dataclasses

    from pretrain.methods import METHODS

    for name, cls in sorted(METHODS.items()):
        params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Params))
        print(f"{name:8s} {cls.__doc__.strip().splitlines()[0] if cls.__doc__ else ''}  [{params}]")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """Per-epoch summary of a run's log.jsonl: loss (mean, max), logged metrics (max), loss spikes."""
    import json

    from pretrain.config import load_yaml
    from pretrain.errors import UserError
    from pretrain.monitor import LossSpikeDetector

    log = Path(args.run_dir) / "log.jsonl"
    if not log.is_file():
        raise UserError(f"no log.jsonl in {args.run_dir}: not a pretraining run directory")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    start = next((r for r in rows if r.get("event") == "start"), {})
    if "peak_lr" in start:
        print(f"lr {start['peak_lr']:g} (lr_per_256 {start['lr_per_256']:g}, global batch {start['global_batch']}), "
              f"{start['total_steps']} steps, warmup {start['warmup_steps']}")
    steps = [r for r in rows if "event" not in r]
    extra = [k for k in (steps[0] if steps else {}) if k not in ("step", "epoch", "lr", "loss", "img_s")]
    print("epoch  steps  loss mean   loss max  " + "  ".join(f"{k + ' max':>12s}" for k in extra) + "  spikes")
    spikes = [r for r in rows if r.get("event") == "loss_spike"]
    for epoch in sorted({r["epoch"] for r in steps}):
        mine = [r for r in steps if r["epoch"] == epoch]
        first, last = mine[0]["step"], mine[-1]["step"]
        count = sum(first <= s["step"] <= last for s in spikes)
        print(f"{epoch + 1:5d}  {len(mine):5d}  {sum(r['loss'] for r in mine) / len(mine):9.4g}  "
              f"{max(r['loss'] for r in mine):9.4g}  " + "  ".join(f"{max(r[k] for r in mine):12.4g}" for k in extra)
              + f"  {count:6d}")
    if spikes:
        print("loss spikes at steps " + ", ".join(str(s["step"]) for s in spikes[:20])
              + (" ..." if len(spikes) > 20 else ""))
    # the losses replayed through the detector: how far above its running level the loss ever went
    factor = load_yaml(Path(args.run_dir) / "config.yaml").get("train", {}).get("loss_spike_factor", 3.0) \
        if (Path(args.run_dir) / "config.yaml").is_file() else 3.0
    replay = LossSpikeDetector(factor=factor)
    for row in steps:
        replay.update(row["step"], row["loss"])
    print(f"largest loss / running median: {replay.max_ratio:.2f} (a spike is > {factor:g})")
    return 0


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML config, e.g. pretrain/configs/look_cpu.yaml")
    p.add_argument("--data", help="ImageNet-layout train folder (default: the embedded generated dataset)")
    p.add_argument("--out", help="run directory (default: runs/pretrain/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set method.k=20 --set train.batch_size=128")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="pretrain a backbone (resumes automatically from <out_dir>/checkpoints/last.pt)")
    _add_run_arguments(p)
    p.add_argument("--resume", help="resume from this checkpoint instead of <out_dir>/checkpoints/last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser("submit", help="pretrain as a submitit job: on SLURM over nodes x GPUs (requeued on "
                                      "preemption or time-out, then resumed), or here")
    _add_run_arguments(p)
    p.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                   help="slurm: submit and return; local: run here (same code path) and wait")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--nproc-per-node", type=int, default=1,
                   help="processes per node, one per GPU (as many GPUs are requested unless train.device=cpu)")
    add_slurm_arguments(p)
    p.set_defaults(func=_submit)

    p = sub.add_parser("make-data", help="write the embedded generated dataset and print its folder")
    p.add_argument("--out", default="data/generated")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="generator setting, e.g. --set num_classes=10")
    p.set_defaults(func=_make_data)

    p = sub.add_parser("inspect", help="per-epoch loss, metrics and loss spikes of a run directory's log")
    p.add_argument("run_dir")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("methods", help="list the registered methods and their parameters")
    p.set_defaults(func=_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: args.func(args))
