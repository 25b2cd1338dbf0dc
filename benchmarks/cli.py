"""`python -m benchmarks run TASK --ckpt X --framework F --schedule 1x|2x|smoke --seed N [--data DIR]`
and `python -m benchmarks collect [--runs runs/bench] [--out results]`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pretrain.errors import report_user_errors


def _run(args: argparse.Namespace) -> int:
    from benchmarks.launch import is_main_process
    from benchmarks.runner import run_benchmark

    run_dir = run_benchmark(args.task, args.ckpt, args.framework, args.schedule, args.seed, args.data, args.out,
                            args.gpus)
    if not is_main_process():
        return 0
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    for task, scores in metrics.items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k not in ("APs", "APm", "APl"))
        print(f"{task}: {shown}")
    print(f"run directory: {run_dir}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from benchmarks.collect import collect, print_tables

    by_task = collect(args.runs, args.out)
    if not by_task:
        print(f"no benchmark runs under {args.runs}")
        return 0
    print_tables(by_task)
    print(f"\ntables: {', '.join(f'{args.out}/{task}.md' for task in by_task)} (+ .csv, .png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="fine-tune and evaluate a pretrained backbone on one task")
    p.add_argument("task", help="coco (detectron2, mmdet), voc or ade20k (mmseg)")
    p.add_argument("--ckpt", required=True, help="any checkpoint transfer/ reads (exported backbone, MoCo, timm ...)")
    p.add_argument("--framework", default="detectron2")
    p.add_argument("--schedule", default="smoke", help="1x, 2x or smoke (embedded data, CPU, minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="dataset root in its standard layout (default for smoke: the embedded data)")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPU processes to start (Detectron2's launch / torch multiprocessing); or start an "
                        "mmdet / mmseg run under torchrun --nproc_per_node N instead")
    p.set_defaults(func=_run)
    c = sub.add_parser("collect", help="gather finished runs into tables and charts in results/")
    c.add_argument("--runs", default="runs/bench")
    c.add_argument("--out", default="results")
    c.set_defaults(func=_collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: args.func(args))
