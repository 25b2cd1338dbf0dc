"""A small object-detection dataset in the exact PASCAL VOC devkit layout (VOC2007 + VOC2012).

<root> is a `VOCdevkit` folder:
  VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/{train,val,trainval,test}.txt}
  VOC2012/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/{train,val,trainval}.txt}
Annotations carry every field VOC's devkit (and detectron2's loader and evaluator) reads: size, and per
object name, pose, truncated, difficult and a 1-based inclusive `bndbox`. Objects use VOC's 20 class names
(each class one shape and colour); every class has a non-difficult object in VOC2007 test, so that each
class's AP is defined, and some extra objects are marked difficult (ignored by the evaluation, as in VOC).
Deterministic from the seed; written once, atomically.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.data.generated import write_once

# VOC's classes, in the order of the devkit (and of detectron2's CLASS_NAMES)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
_SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
_HUES = ((230, 60, 60), (60, 200, 80), (70, 110, 235), (235, 210, 60), (200, 80, 220))

# What the VOC07+12 detection benchmark reads (relative to VOCdevkit) and reports.
VOC_DET_FILES = ("VOC2007/Annotations", "VOC2007/JPEGImages", "VOC2007/ImageSets/Main/trainval.txt",
                 "VOC2007/ImageSets/Main/test.txt", "VOC2012/Annotations", "VOC2012/JPEGImages",
                 "VOC2012/ImageSets/Main/trainval.txt")
VOC_DET_TITLE = "PASCAL VOC07+12 detection, Faster R-CNN R50-C4 (VOC2007 test)"
# (group in result.json, metric, column): VOC's 11-point AP (the protocol papers quote) and the integral AP
VOC_DET_METRICS = (("bbox", "AP50", "AP50"), ("bbox", "AP", "AP"), ("bbox", "AP75", "AP75"),
                   ("bbox_integral", "AP50", "AP50_int"), ("bbox_integral", "AP", "AP_int"),
                   ("bbox_integral", "AP75", "AP75_int"))


@dataclass(frozen=True)
class VocDetSpec:
    trainval_2007: int = 8
    test_2007: int = 12  # at least 10: two non-difficult objects each cover the 20 classes
    trainval_2012: int = 8
    seed: int = 0


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=colour)


def _annotation(folder: str, image_id: str, size: tuple[int, int], objects: list[dict]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size_node = ET.SubElement(root, "size")
    for tag, value in (("width", size[0]), ("height", size[1]), ("depth", 3)):
        ET.SubElement(size_node, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(obj["difficult"])
        box = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["bbox"], strict=True):
            ET.SubElement(box, tag).text = str(value)
    return ET.ElementTree(root)


def write_voc_year(year_dir: Path, year: int, splits: dict[str, int], seed: int) -> None:
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year_dir / folder).mkdir(parents=True)
    next_class = 0  # classes cycle over the non-difficult objects, so that every class occurs
    lists: dict[str, list[str]] = {}
    for split_index, (split, count) in enumerate(splits.items()):
        ids = []
        for index in range(count):
            image_id = f"{year}_{split_index}{index:05d}" if year == 2012 else f"{split_index}{index:05d}"
            rng = np.random.default_rng([seed, year, split_index, index])
            width, height = int(rng.integers(128, 161)), int(rng.integers(112, 129))
            pixels = rng.uniform(20, 90, 3) + rng.normal(0, 6, (height, width, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            objects = []
            cells = rng.permutation(4)[: int(rng.integers(2, 4))]  # 2x2 grid, one object per cell
            for order, cell in enumerate(cells):
                difficult = int(order == 2 and rng.random() < 0.5)
                label = int(rng.integers(len(VOC_CLASSES))) if difficult else next_class % len(VOC_CLASSES)
                next_class += 0 if difficult else 1
                cw, ch = width / 2, height / 2
                w, h = rng.uniform(0.5, 0.9) * cw, rng.uniform(0.5, 0.9) * ch
                x0 = (cell % 2) * cw + rng.uniform(0, cw - w)
                y0 = (cell // 2) * ch + rng.uniform(0, ch - h)
                _draw(draw, _SHAPES[label % 4], (x0, y0, x0 + w, y0 + h), _HUES[label // 4])
                # VOC boxes are 1-based pixel indices, inclusive
                bbox = (int(x0) + 1, int(y0) + 1, min(int(x0 + w) + 1, width), min(int(y0 + h) + 1, height))
                objects.append({"name": VOC_CLASSES[label], "difficult": difficult, "bbox": bbox})
            image.save(year_dir / "JPEGImages" / f"{image_id}.jpg", quality=95)
            _annotation(f"VOC{year}", image_id, (width, height), objects).write(
                year_dir / "Annotations" / f"{image_id}.xml")
            ids.append(image_id)
        lists[split] = ids
    if "trainval" in lists:  # VOC's own train / val halves of trainval
        half = len(lists["trainval"]) // 2
        lists["train"], lists["val"] = lists["trainval"][:half], lists["trainval"][half:]
    for split, ids in lists.items():
        (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def generate_voc_detection(spec: VocDetSpec, base: str | Path = "data/generated") -> Path:
    """Write VOCdevkit (once) and return it."""
    top = Path(base) / f"voc-det-{spec.seed}-{spec.trainval_2007}-{spec.test_2007}-{spec.trainval_2012}"

    def write(tmp: Path) -> None:
        write_voc_year(tmp / "VOCdevkit" / "VOC2007", 2007,
                    {"trainval": spec.trainval_2007, "test": spec.test_2007}, spec.seed)
        write_voc_year(tmp / "VOCdevkit" / "VOC2012", 2012, {"trainval": spec.trainval_2012}, spec.seed)

    return write_once(top, "VOCdevkit/VOC2012/ImageSets/Main/val.txt", write) / "VOCdevkit"


def embedded_voc_detection() -> Path:
    return generate_voc_detection(VocDetSpec())
