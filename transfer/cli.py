"""`python -m transfer export CKPT --to detectron2|mmdet|mmseg|all --out DIR [--verify]`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pretrain.errors import report_user_errors


def _export(args: argparse.Namespace) -> int:
    from transfer.export import export, parse_targets
    from transfer.named import resolve_checkpoint

    record = export(resolve_checkpoint(args.checkpoint), parse_targets(args.to), args.out, verify=args.verify)
    source = record["source"]
    print(f"source: {source['path']} ({source['flavour']}, {source['arch']}"
          f"{', method ' + source['method'] if source['method'] else ''})")
    print(f"dropped: {', '.join(source['dropped']) or 'nothing'}")
    convention = "recorded in the checkpoint" if source["input_recorded"] else "not recorded: torchvision's assumed"
    print(f"input: {source['input']['channel_order']}, mean {source['input']['mean']}, "
          f"std {source['input']['std']} ({convention})")
    for name, target in record["targets"].items():
        if name not in args.to and args.to != "all":
            continue
        check = ("verified, max relative error " + f"{max(target['max_relative_error'].values()):.1e}"
                 if target["verified"] else "not verified (use --verify)")
        print(f"{name:10s} {args.out}/{target['file']}  {check}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="convert a pretrained ResNet into Detectron2 / MMDetection / MMSegmentation")
    p.add_argument("checkpoint", help="exported backbone, training checkpoint, timm/torchvision, MoCo, SwAV or "
                                      "MMSelfSup checkpoint, or a released checkpoint's name (moco-v2-800ep, "
                                      "torchvision://resnet50, timm://resnet50.a1_in1k, ...: transfer/named.py), "
                                      "fetched once into its framework's cache")
    p.add_argument("--to", default="all", help="detectron2, mmdet, mmseg, a comma list, or all (default)")
    p.add_argument("--out", default="runs/transfer", help="output folder (default: runs/transfer)")
    p.add_argument("--verify", action="store_true",
                   help="load each file with the target framework's own ResNet and loader and compare every stage")
    p.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: args.func(args))
