"""CPU time per training image of each data path, and the CPU cores it takes to feed one GPU's training step.

Prints figures (never asserts them). Each path decodes and augments the same JPEGs one by one in this process on
one thread, measured in CPU seconds (`time.process_time`, the unit loader workers cost), with the training
transform of the data config (RandomResizedCrop to `data.image_size` with `data.crop_scale`, a horizontal flip,
to float, normalise):

- `PIL`: what each ImageFolder loader worker runs today (PIL decode, torchvision's transform on the PIL image);
- `torchvision.io`: libjpeg-turbo through `torchvision.io.decode_jpeg`, the same crop on uint8 tensors
  (`transforms.v2`, antialiased) — the CPU half of a GPU decoder's path, and an alternative CPU path.

Each path is timed twice: decoding alone, then decoding and augmenting. Cores per GPU = the step's images/s x CPU
seconds per image. The default rate is SL's ResNet-50 step on one NVIDIA H200 (4663 images/s,
results/gpu_check_h200.md). The images default to generated ImageNet-like JPEGs (pretrain/data/imagenet_like.py).

  python -m pretrain.timers.data_time [--data DIR] [--images 256] [--rate 4663]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

H200_SL_IMAGES_PER_S = 4663.0  # results/gpu_check_h200.md: SL's ResNet-50 step, bf16, channels_last, batch 256


def jpeg_paths(root: Path, count: int) -> list[Path]:
    """The first `count` JPEGs of an ImageFolder, class folder by class folder."""
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        from pretrain.errors import UserError

        raise UserError(f"no JPEG files under {root}/<class>/")
    return paths[:count]


def pil_path(image_size: int, crop_scale: tuple[float, float], mean: list[float], std: list[float]
             ) -> tuple[Callable[[Path], Any], Callable[[Path], Any]]:
    """(decode, decode and augment) of the file path: PIL, then the ImageFolder loader's training transform."""
    from PIL import Image

    from pretrain.config import DataConfig
    from pretrain.data import train_transform

    transform = train_transform(DataConfig(image_size=image_size, crop_scale=list(crop_scale), mean=mean, std=std))

    def decode(path: Path) -> Any:
        with Image.open(path) as image:
            return image.convert("RGB")

    return decode, lambda path: transform(decode(path))


def torchvision_path(image_size: int, crop_scale: tuple[float, float], mean: list[float], std: list[float]
                     ) -> tuple[Callable[[Path], Any], Callable[[Path], Any]]:
    """(decode, decode and augment) with torchvision.io's decoder and transforms.v2 on uint8 tensors."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def decode(path: Path) -> torch.Tensor:
        return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)

    return decode, lambda path: transform(decode(path))


def file_read_path(image_size: int, crop_scale: tuple[float, float], mean: list[float], std: list[float]
                   ) -> tuple[Callable[[Path], Any], Callable[[Path], Any]]:
    """What a worker of the GPU path (`data.decoder: gpu`) does per image: read the file's bytes. Decoding and
    augmenting are the GPU's (and nvjpeg's host share runs in the training process, measured on a GPU)."""
    from pretrain.data.gpu_decode import FileBytes

    def read(path: Path) -> torch.Tensor:
        return FileBytes.read(path)

    return read, read


PATHS = {"PIL": pil_path, "torchvision.io": torchvision_path, "GPU path's workers (file read)": file_read_path}


def process_tree_cpu_seconds() -> dict[int, float] | None:
    """CPU seconds used so far by this process and by each of its child processes (loader workers), by pid, from
    Linux's /proc; None elsewhere."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    tick, me = os.sysconf("SC_CLK_TCK"), os.getpid()
    seconds = {me: time.process_time()}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if int(fields[1]) == me:  # fields after the name: state, ppid, ..., utime (11), stime (12)
            seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def cpu_seconds_per_image(work: Callable[[Path], Any], paths: list[Path]) -> float:
    checked(work, paths[0])  # imports, first allocations
    started = time.process_time()
    for path in paths:
        checked(work, path)
    return (time.process_time() - started) / len(paths)


def checked(work: Callable[[Path], Any], path: Path) -> Any:
    """`work(path)`; a file a decoder refuses is one error naming it (never a silent black image)."""
    from pretrain.errors import CorruptImageError

    try:
        return work(path)
    except (OSError, RuntimeError, ValueError) as e:
        raise CorruptImageError(f"corrupt image file {path}: {e}") from None


def time_paths(paths: list[Path], rate: float, image_size: int = 224, crop_scale: tuple[float, float] = (0.08, 1.0),
               mean: list[float] | None = None, std: list[float] | None = None) -> list[dict[str, Any]]:
    """Per data path: CPU seconds per image to decode, and to decode and augment; images/s per core; cores per
    GPU at `rate` images/s."""
    from pretrain.config import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    rows = []
    for name, build in PATHS.items():
        decode, augment = build(image_size, crop_scale, list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD))
        decoding, total = cpu_seconds_per_image(decode, paths), cpu_seconds_per_image(augment, paths)
        rows.append({"path": name, "decode_ms": decoding * 1e3, "total_ms": total * 1e3,
                     "images_per_core_s": 1 / total, "cores_per_gpu": rate * total})
    return rows


def markdown(rows: list[dict[str, Any]], rate: float, images: str, image_size: int) -> str:
    lines = [f"Data path, one thread, {images}, training crop {image_size} px; cores to feed {rate:.0f} images/s "
             "a GPU:",
             "", "| path | decode (CPU ms / image) | decode + augment (CPU ms / image) | images/s per core | "
             "cores per GPU |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['path']} | {r['decode_ms']:.2f} | {r['total_ms']:.2f} | {r['images_per_core_s']:.0f} | "
              f"{r['cores_per_gpu']:.1f} |" for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an ImageFolder of JPEGs (default: generated ImageNet-like JPEGs)")
    parser.add_argument("--images", type=int, default=256, help="images timed per path")
    parser.add_argument("--rate", type=float, default=H200_SL_IMAGES_PER_S,
                        help="a GPU's training images/s to feed (default: SL ResNet-50 on one H200)")
    parser.add_argument("--image-size", type=int, default=224)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pretrain.data.imagenet_like import ImageNetLikeConfig, describe, generate_imagenet_like
    from pretrain.errors import report_user_errors

    args = build_parser().parse_args(argv)

    def run() -> int:
        torch.set_num_threads(1)
        if args.data:
            root, images = Path(args.data), f"JPEGs from {args.data}"
        else:
            root = generate_imagenet_like(ImageNetLikeConfig(images=max(args.images, 1)))
            images = describe(root)
        paths = jpeg_paths(root, args.images)
        rows = time_paths(paths, args.rate, args.image_size)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
        print(markdown(rows, args.rate, f"{len(paths)} {images.split(' ', 1)[1] if not args.data else images}",
                       args.image_size))
        return 0

    return report_user_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
