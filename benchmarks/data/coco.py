"""A small instance-segmentation dataset in the exact COCO 2017 layout, with polygon masks.

<root>/train2017/*.jpg, <root>/val2017/*.jpg, <root>/annotations/instances_{train,val}2017.json.
Objects are regular polygons (the polygon *is* the mask outline, so the annotation is exact), one per
grid cell so that no object hides another. Deterministic from the seed; written once, atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.registry import Claim
from pretrain.data.generated import write_once

CATEGORIES = [("triangle", 3), ("square", 4), ("hexagon", 6)]


@dataclass(frozen=True)
class CocoSpec:
    train_images: int = 24
    val_images: int = 8
    image_size: int = 128
    max_objects: int = 3
    seed: int = 0


def _polygon(sides: int, cx: float, cy: float, radius: float, angle: float) -> list[float]:
    points = []
    for i in range(sides):
        theta = angle + 2 * math.pi * i / sides
        points += [round(cx + radius * math.cos(theta), 2), round(cy + radius * math.sin(theta), 2)]
    return points


def _area(points: list[float]) -> float:
    xs, ys = points[0::2], points[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def _split(spec: CocoSpec, split: str, count: int, folder: Path, first_ann_id: int) -> dict:
    images, annotations = [], []
    size, cells = spec.image_size, 2
    for index in range(count):
        rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, index])
        background = rng.uniform(20, 90, 3) + rng.normal(0, 6, (size, size, 3))
        canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        image_id = index + 1
        slots = rng.permutation(cells * cells)[: rng.integers(1, spec.max_objects + 1)]
        for slot in slots:
            category = int(rng.integers(len(CATEGORIES)))
            cell = size / cells
            radius = rng.uniform(0.25, 0.42) * cell
            cx = (slot % cells + 0.5) * cell + rng.uniform(-0.05, 0.05) * cell
            cy = (slot // cells + 0.5) * cell + rng.uniform(-0.05, 0.05) * cell
            points = _polygon(CATEGORIES[category][1], cx, cy, radius, rng.uniform(0, 2 * math.pi))
            colour = tuple(int(c) for c in rng.uniform(140, 255, 3))
            draw.polygon(points, fill=colour)
            xs, ys = points[0::2], points[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append({
                "id": first_ann_id + len(annotations), "image_id": image_id, "category_id": category + 1,
                "segmentation": [points], "area": round(_area(points), 2), "iscrowd": 0,
                "bbox": [round(v, 2) for v in box],
            })
        name = f"{image_id:012d}.jpg"
        canvas.save(folder / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    return {
        "info": {"description": f"transfer-bench generated COCO-format data ({split})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, (name, _) in enumerate(CATEGORIES)],
    }


def generate_coco(spec: CocoSpec, base: str | Path = "data/generated") -> Path:
    """Write the dataset (once) and return its root."""
    root = Path(base) / f"coco-{spec.seed}-{spec.train_images}-{spec.val_images}-{spec.image_size}-{spec.max_objects}"

    def write(tmp: Path) -> None:
        (tmp / "annotations").mkdir(parents=True)
        next_id = 1
        for split, count in (("train", spec.train_images), ("val", spec.val_images)):
            (tmp / f"{split}2017").mkdir()
            data = _split(spec, split, count, tmp / f"{split}2017", next_id)
            next_id += len(data["annotations"])
            (tmp / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))

    return write_once(root, "annotations/instances_val2017.json", write)


# What every COCO benchmark reads and reports, whatever the framework.
COCO_FILES = ("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json")
COCO_TITLE = "COCO instance segmentation (Mask R-CNN R50-FPN protocol)"
# SL-MLP's COCO claim: the tables say how many seeds would detect it
COCO_CLAIMS = (Claim("AP_bb", 0.8, "SL-MLP over SL, Wang et al., CVPR 2022 (arXiv 2112.00496), abstract: +0.8 AP on "
                     "COCO object detection"),)
COCO_METRICS = (("bbox", "AP", "AP_bb"), ("bbox", "AP50", "AP50_bb"), ("bbox", "AP75", "AP75_bb"),
                ("segm", "AP", "AP_mk"), ("segm", "AP50", "AP50_mk"), ("segm", "AP75", "AP75_mk"))


def embedded_coco() -> Path:
    return generate_coco(CocoSpec())
