"""What the many-shot linear protocol costs: the C search with and without warm starts, measured on synthetic
features, and one ResNet-50 checkpoint's whole protocol estimated from measured unit costs. Prints figures (never
asserts them).

1. The search: `classes` Gaussian clusters in `dim` dimensions (centres drawn with std 0.15, unit noise), through
   a ReLU as pooled features are; `train` images to fit, a quarter as many to validate; seed 0. Warm and cold
   starts: the C chosen, L-BFGS iterations, objective evaluations, seconds.
2. The estimate (`--estimate`): measured here, ResNet-50's feature extraction (images/s at 224 px, batch 64, random
   weights) and one objective-and-gradient evaluation at 8,192 x 2,048 features and 10 classes (float64); then per
   dataset of the protocol at its official split sizes, extraction = images / rate, and the search = the
   evaluations per search measured in 1 (the assumption: real features need as many) x the evaluation's time
   scaled by (training images x classes) / (8,192 x 10), plus the refit as one 45th of it at train + val.

  python -m benchmarks.commands.cls_linear_time [--classes 10] [--dim 256] [--train 4000] [--estimate]
      [--device cpu]
  python -m benchmarks.commands.cls_linear_time --from-units IMAGES_PER_S EVALUATION_MS EVALUATIONS
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.frameworks.cls_linear import Split, search_C
from pretrain.timers import synchronize

# official split sizes: (train, val, test) images; val 0 where the protocol carves 20 % from train; classes
SIZES = {"aircraft": (3334, 3333, 3333, 100), "caltech101": (2416, 0, 6728, 102), "cars": (8144, 0, 8041, 196),
         "cifar10": (50000, 0, 10000, 10), "cifar100": (50000, 0, 10000, 100), "dtd": (1880, 1880, 1880, 47),
         "flowers102": (1020, 1020, 6149, 102), "food101": (75750, 0, 25250, 101), "pets": (3680, 0, 3669, 37),
         "sun397": (19850, 0, 19850, 397), "voc2007": (2501, 2510, 4952, 20)}
UNIT = (8192, 2048, 10)  # the evaluation timed: images, feature dimensions, classes


def synthetic(classes: int, dim: int, count: int, generator: torch.Generator, centres: torch.Tensor) -> Split:
    labels = torch.arange(count) % classes
    return Split(torch.relu(centres[labels] + torch.randn(count, dim, generator=generator)).double(), labels)


def extraction_rate(device: str, batches: int = 3) -> float:
    """ResNet-50 (random weights, eval mode) images/s at 224 px, batch 64."""
    from pretrain.models import build_backbone

    model = build_backbone("resnet50")[0].to(device).eval()
    images = torch.randn(64, 3, 224, 224, device=device)
    with torch.no_grad():
        model(images)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(batches):
            model(images)
        synchronize(device)
    return 64 * batches / (time.perf_counter() - started)


def evaluation_seconds(device: str, repeats: int = 5) -> float:
    """One objective-and-gradient evaluation of the multinomial fit at UNIT's size, float64."""
    n, d, k = UNIT
    x = torch.rand(n, d, device=device, dtype=torch.float64)
    y = torch.randint(0, k, (n,), device=device)
    weight = torch.zeros(d, k, device=device, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, device=device, dtype=torch.float64, requires_grad=True)

    def once() -> None:
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-4 * weight.pow(2).sum()
        loss.backward()

    once()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--estimate", action="store_true", help="also estimate one ResNet-50's whole protocol")
    parser.add_argument("--from-units", nargs=3, type=float, metavar=("IMAGES_PER_S", "EVALUATION_MS", "EVALUATIONS"),
                        help="print the estimate from these measured units (a run's own), measuring nothing")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.from_units:
        rate, unit_ms, evaluations = args.from_units
        print(estimate(rate, unit_ms / 1e3, int(evaluations)))
        return 0
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(args.classes, args.dim, generator=generator) * 0.15
    train = synthetic(args.classes, args.dim, args.train, generator, centres)
    val = synthetic(args.classes, args.dim, args.train // 4, generator, centres)
    train, val = (Split(s.features.to(args.device), s.labels.to(args.device)) for s in (train, val))
    print(f"{args.classes} classes, {args.dim} dims, {args.train} + {args.train // 4} images, {args.device}, "
          f"{torch.get_num_threads()} threads")
    searches = {}
    for warm in (True, False):
        started = time.perf_counter()
        searches[warm] = search = search_C(train, val, "top1", args.classes, warm=warm)
        synchronize(args.device)
        score = search.scores[search.best_C]
        print(f"{'warm' if warm else 'cold'} starts: C {search.best_C:.4g}, validation {score:.2f} %, "
              f"{search.iterations} L-BFGS iterations, {search.evaluations} evaluations, "
              f"{time.perf_counter() - started:.1f} s")
    if not args.estimate:
        return 0
    rate, unit = extraction_rate(args.device), evaluation_seconds(args.device)
    print(estimate(rate, unit, searches[True].evaluations))
    return 0


def estimate(rate: float, unit: float, evaluations: int) -> str:
    """The protocol's cost for one ResNet-50 from its unit costs: the arithmetic of the module's docstring."""
    n0, d0, k0 = UNIT
    lines = [f"\nResNet-50 features: {rate:.1f} images/s; one evaluation at {n0} x {d0} x {k0}: {unit * 1e3:.1f} ms; "
             f"{evaluations} evaluations per search (warm starts)\n",
             "| dataset | images | extraction (s) | search (s) | refit (s) |", "|---|---:|---:|---:|---:|"]
    totals = [0, 0.0, 0.0, 0.0]
    for name, (n_train, n_val, n_test, classes) in SIZES.items():
        fit_images = n_train if n_val else int(n_train * 0.8)
        images = n_train + n_val + n_test
        row = [images, images / rate, evaluations * unit * fit_images * classes / (n0 * k0),
               evaluations / 45 * unit * (n_train + n_val) * classes / (n0 * k0)]
        totals = [t + v for t, v in zip(totals, row, strict=True)]
        lines.append(f"| {name} | {images:,} | {row[1]:,.0f} | {row[2]:,.0f} | {row[3]:,.0f} |")
    lines.append(f"| all | {totals[0]:,} | {totals[1]:,.0f} | {totals[2]:,.0f} | {totals[3]:,.0f} |")
    seconds = sum(totals[1:])
    lines.append(f"\ntotal: {seconds:,.0f} s = {seconds / 3600:.1f} h")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
