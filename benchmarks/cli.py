"""`python -m benchmarks run TASK --ckpt X --framework F --schedule 1x|2x|smoke --seed N [--data DIR]`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pretrain.errors import report_user_errors


def _run(args: argparse.Namespace) -> int:
    from benchmarks.runner import run_benchmark

    run_dir = run_benchmark(args.task, args.ckpt, args.framework, args.schedule, args.seed, args.data, args.out)
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    for task, scores in metrics.items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k in ("AP", "AP50", "AP75", "mIoU", "mAcc"))
        print(f"{task}: {shown}")
    print(f"run directory: {run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="fine-tune and evaluate a pretrained backbone on one task")
    p.add_argument("task", help="coco")
    p.add_argument("--ckpt", required=True, help="any checkpoint transfer/ reads (exported backbone, MoCo, timm ...)")
    p.add_argument("--framework", default="detectron2")
    p.add_argument("--schedule", default="smoke", help="1x, 2x or smoke (embedded data, CPU, minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="dataset root in its standard layout (default for smoke: the embedded data)")
    p.add_argument("--out", default="runs/bench")
    p.set_defaults(func=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: args.func(args))
