"""Small semantic-segmentation datasets in the exact PASCAL VOC 2012 (+aug) and ADE20K layouts.

VOC (`<root>/VOC2012`, as mmseg's `data_root`):
  JPEGImages/<id>.jpg; SegmentationClass/<id>.png: palette PNGs, 0 background, 1..20 classes,
  255 on object borders (as VOC's annotators drew them); SegmentationClassAug/<id>.png: single-channel
  label PNGs without borders (what mmseg's SBD conversion writes); ImageSets/Segmentation/
  {train,val,trainval,aug}.txt, where aug.txt is every non-val id (VOC train plus the SBD-only ids).
ADE20K (`<root>/ADEChallengeData2016`): images/{training,validation}/ADE_*.jpg and
  annotations/{training,validation}/ADE_*.png, single-channel, 0 = unlabelled ("other"), 1..150 classes.

Scenes are a textured background region plus a few shapes, each shape one class (the first classes of
the real label set), so the frameworks' own dataset classes and IoUMetric read them unchanged.
Deterministic from the seed; written once, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.data.generated import write_once

SHAPES = ("ellipse", "triangle", "rectangle")  # drawn as classes 1, 2, 3 (VOC) or 2, 3, 4 (ADE20K)


@dataclass(frozen=True)
class SegSpec:
    train_images: int = 16
    val_images: int = 8
    extra_aug_images: int = 8  # VOC only: ids that exist in SBD's aug labels only
    seed: int = 0


def voc_palette() -> list[int]:
    """VOC's colour map: the bits of the label spread over the high bits of R, G, B."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _scene(rng: np.random.Generator, first_label: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """An RGB image, its label map, and a mask of the shapes' outlines."""
    width, height = int(rng.integers(112, 160)), int(rng.integers(96, 128))
    pixels = rng.uniform(30, 110, 3) + rng.normal(0, 8, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    labels = Image.new("L", (width, height), 0)
    borders = Image.new("L", (width, height), 0)
    draw, label_draw, border_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels), ImageDraw.Draw(borders)
    for _ in range(int(rng.integers(1, 4))):
        shape = int(rng.integers(len(SHAPES)))
        w, h = rng.uniform(0.25, 0.5) * width, rng.uniform(0.25, 0.5) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        box = [x, y, x + w, y + h]
        colour = tuple(int(c) for c in rng.uniform(130, 255, 3))
        outline = {"ellipse": ImageDraw.ImageDraw.ellipse, "rectangle": ImageDraw.ImageDraw.rectangle}
        for canvas, fill in ((draw, colour), (label_draw, first_label + shape), (border_draw, 0)):
            if SHAPES[shape] == "triangle":
                canvas.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], fill=fill)
            else:
                outline[SHAPES[shape]](canvas, box, fill=fill)
        if SHAPES[shape] == "triangle":
            border_draw.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], outline=255, width=3)
        else:
            outline[SHAPES[shape]](border_draw, box, outline=255, width=3)
    return image, np.asarray(labels), np.asarray(borders) > 0


def generate_voc(spec: SegSpec, base: str | Path = "data/generated") -> Path:
    """Write VOCdevkit/VOC2012 (once) and return the VOC2012 folder (mmseg's data_root)."""
    top = Path(base) / f"voc-{spec.seed}-{spec.train_images}-{spec.val_images}-{spec.extra_aug_images}"

    def write(tmp: Path) -> None:
        root = tmp / "VOCdevkit" / "VOC2012"
        for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
            (root / folder).mkdir(parents=True)
        splits: dict[str, list[str]] = {"train": [], "val": [], "extra": []}
        counts = {"train": spec.train_images, "val": spec.val_images, "extra": spec.extra_aug_images}
        for split_index, (split, count) in enumerate(counts.items()):
            for index in range(count):
                image_id = f"2007_{split_index:02d}{index:04d}"
                image, labels, borders = _scene(np.random.default_rng([spec.seed, split_index, index]), 1)
                image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
                if split != "extra":  # SBD-only ids have no VOC annotation
                    with_borders = Image.fromarray(np.where(borders, 255, labels).astype(np.uint8), "P")
                    with_borders.putpalette(voc_palette())
                    with_borders.save(root / "SegmentationClass" / f"{image_id}.png")
                if split != "val":
                    aug = Image.fromarray(labels.astype(np.uint8), "L")
                    aug.save(root / "SegmentationClassAug" / f"{image_id}.png")
                splits[split].append(image_id)
        lists = {"train": splits["train"], "val": splits["val"], "trainval": splits["train"] + splits["val"],
                 "aug": splits["train"] + splits["extra"]}
        for name, ids in lists.items():
            (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))

    return write_once(top, "VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt", write) / "VOCdevkit" / "VOC2012"


def generate_ade20k(spec: SegSpec, base: str | Path = "data/generated") -> Path:
    """Write ADEChallengeData2016 (once) and return it (mmseg's data_root)."""
    top = Path(base) / f"ade20k-{spec.seed}-{spec.train_images}-{spec.val_images}"

    def write(tmp: Path) -> None:
        root = tmp / "ADEChallengeData2016"
        for split_index, (split, count) in enumerate((("training", spec.train_images),
                                                      ("validation", spec.val_images))):
            (root / "images" / split).mkdir(parents=True)
            (root / "annotations" / split).mkdir(parents=True)
            for index in range(count):
                name = f"ADE_{'train' if split == 'training' else 'val'}_{index + 1:08d}"
                rng = np.random.default_rng([spec.seed, 10 + split_index, index])
                image, labels, borders = _scene(rng, 2)
                # class 1 ("wall") is the background; 0 ("other", ignored) on the outlines
                labels = np.where(borders, 0, np.where(labels == 0, 1, labels)).astype(np.uint8)
                image.save(root / "images" / split / f"{name}.jpg", quality=95)
                Image.fromarray(labels, "L").save(root / "annotations" / split / f"{name}.png")

    marker = f"ADEChallengeData2016/annotations/validation/ADE_val_{spec.val_images:08d}.png"
    return write_once(top, marker, write) / "ADEChallengeData2016"


# What the semantic segmentation benchmarks read and report.
VOC_FILES = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation/train.txt",
             "ImageSets/Segmentation/aug.txt", "ImageSets/Segmentation/val.txt")
ADE20K_FILES = ("images/training", "images/validation", "annotations/training", "annotations/validation")
SEG_METRICS = (("sem_seg", "mIoU", "mIoU"), ("sem_seg", "mAcc", "mAcc"), ("sem_seg", "aAcc", "aAcc"))


def embedded_voc() -> Path:
    return generate_voc(SegSpec())


def embedded_ade20k() -> Path:
    return generate_ade20k(SegSpec())
