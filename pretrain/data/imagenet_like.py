"""Generated JPEGs shaped like ImageNet's training images, for timing the data path (not for training).

ImageNet's training images are JPEGs of about 400 x 350 px and 110 KB, so decoding, cropping and resizing them
costs far more than the embedded data's 224 px PNGs. These images are drawn so: the long side is 500 px for 60 %
of them (the common Flickr size) and otherwise uniform in 200-600; the aspect ratio (width / height) is 4:3,
3:2, 3:4, 2:3 or 1:1 with probabilities 0.55, 0.15, 0.12, 0.03, 0.15; the content is a smooth colour field with
mid-frequency variation and fine noise of a per-image strength, saved at a JPEG quality uniform in 88-96. These
distributions are ours (about 450 x 390 px and 98 KB on average); the dataset's `dataset.json` records the means
of the images written, which the timer prints beside its figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.data.generated import write_once

ASPECTS = ((4 / 3, 0.55), (3 / 2, 0.15), (3 / 4, 0.12), (2 / 3, 0.03), (1.0, 0.15))


@dataclass(frozen=True)
class ImageNetLikeConfig:
    images: int = 256
    classes: int = 8
    seed: int = 0


def draw_image(rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One image and the JPEG quality to save it at."""
    long_side = 500 if rng.random() < 0.6 else int(rng.integers(200, 601))
    aspect = float(rng.choice([a for a, _ in ASPECTS], p=[p for _, p in ASPECTS]))
    width, height = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    field = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.float32)
    middle = rng.normal(0, 30, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    pixels += np.stack([np.asarray(Image.fromarray(middle[..., c]).resize((width, height), Image.BILINEAR))
                        for c in range(3)], axis=-1)
    pixels += rng.normal(0, rng.uniform(10, 18), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), int(rng.integers(88, 97))


def generate_imagenet_like(config: ImageNetLikeConfig = ImageNetLikeConfig(),
                           base: str | Path = "data/generated") -> Path:
    """Write the images once as an ImageFolder (`<root>/train/class_<k>/<i>.JPEG`); returns `<root>/train`."""
    blob = json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
    root = Path(base) / f"imagenet-like-{hashlib.sha256(blob).hexdigest()[:10]}"

    def write(tmp: Path) -> None:
        sizes, widths, heights = [], [], []
        for index in range(config.images):
            image, quality = draw_image(np.random.default_rng([config.seed, index]))
            folder = tmp / "train" / f"class_{index % config.classes:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{index:06d}.JPEG"
            image.save(path, "JPEG", quality=quality)
            sizes.append(path.stat().st_size)
            widths.append(image.width)
            heights.append(image.height)
        record = {"generator": "pretrain.data.imagenet_like", "config": dataclasses.asdict(config),
                  "mean_bytes": float(np.mean(sizes)), "mean_width": float(np.mean(widths)),
                  "mean_height": float(np.mean(heights))}
        (tmp / "dataset.json").write_text(json.dumps(record, indent=1))

    return write_once(root, "dataset.json", write) / "train"


def describe(train: Path) -> str:
    """"N JPEGs, mean W x H px, K KB" from the dataset's record."""
    record = json.loads((train.parent / "dataset.json").read_text())
    return (f"{record['config']['images']} generated ImageNet-like JPEGs, mean {record['mean_width']:.0f} x "
            f"{record['mean_height']:.0f} px, {record['mean_bytes'] / 1000:.0f} KB")
