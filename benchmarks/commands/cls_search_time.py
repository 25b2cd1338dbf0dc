"""The many-shot linear protocol's C search with and without warm starts, on synthetic features: iterations,
seconds, and the C each chooses. Prints figures (never asserts them).

Features: `classes` Gaussian clusters in `dim` dimensions (centres drawn with std 0.15, unit noise), through a
ReLU as pooled features are; `train` images to fit, a quarter as many to validate; seed 0.

  python -m benchmarks.commands.cls_search_time [--classes 10] [--dim 256] [--train 4000] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.frameworks.cls_linear import Split, search_C


def synthetic(classes: int, dim: int, count: int, generator: torch.Generator, centres: torch.Tensor) -> Split:
    labels = torch.arange(count) % classes
    return Split(torch.relu(centres[labels] + torch.randn(count, dim, generator=generator)).double(), labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.dim, generator=generator) * 0.15
    train = synthetic(args.classes, args.dim, args.train, generator, centres)
    val = synthetic(args.classes, args.dim, args.train // 4, generator, centres)
    train, val = (Split(s.features.to(args.device), s.labels.to(args.device)) for s in (train, val))
    print(f"{args.classes} classes, {args.dim} dims, {args.train} + {args.train // 4} images, {args.device}, "
          f"{torch.get_num_threads()} threads")
    for warm in (True, False):
        started = time.perf_counter()
        search = search_C(train, val, "top1", args.classes, warm=warm)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        score = search.scores[search.best_C]
        print(f"{'warm' if warm else 'cold'} starts: C {search.best_C:.4g}, validation {score:.2f} %, "
              f"{search.iterations} L-BFGS iterations, {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
