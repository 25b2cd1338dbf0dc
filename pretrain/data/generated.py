"""The embedded dataset: small, deterministic, and multi-modal inside every class.

Every class is a union of `modes_per_class` sub-modes. A sub-mode is a visual family (shape, colour,
texture) that no other sub-mode shares, so a class looks like several unrelated clusters: exactly the
intra-class variation that SL is said to collapse and SL-MLP / LOOK to keep. The sub-mode of every
image is recorded in `<split>_submodes.csv` (never read by pretraining) for later analysis.

Written in the ImageNet layout (`train/<class>/<image>.png`, `val/...`), so pretraining reads it
through the same ImageFolder code as real data. PNG is lossless: the files are a pure function of
the parameters and the seed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.config import GeneratedDataConfig

SHAPES = ["disk", "square", "triangle", "ring", "cross", "diamond", "bar", "blob"]
TEXTURES = ["flat", "stripes", "dots"]
HUES = 12  # colours around the hue circle


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def mode_families(config: GeneratedDataConfig) -> list[dict]:
    """A distinct (shape, hue, texture) family for every (class, sub-mode), fixed by the seed."""
    combos = [(s, h, t) for s in range(len(SHAPES)) for h in range(HUES) for t in range(len(TEXTURES))]
    needed = config.num_classes * config.modes_per_class
    if needed > len(combos):
        raise ValueError(f"at most {len(combos)} sub-modes in all; asked for {needed}")
    rng = np.random.default_rng([config.seed, 7])
    chosen = [combos[i] for i in rng.permutation(len(combos))[:needed]]
    return [
        {"class": c, "mode": m, "submode": c * config.modes_per_class + m,
         "shape": SHAPES[s], "hue": h, "texture": TEXTURES[t]}
        for (c, m), (s, h, t) in zip(
            ((c, m) for c in range(config.num_classes) for m in range(config.modes_per_class)), chosen,
            strict=True,
        )
    ]


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask of a shape in centred, rotated, unit-scaled coordinates."""
    r = np.sqrt(x**2 + y**2)
    if shape == "disk":
        return r < 1
    if shape == "square":
        return (np.abs(x) < 0.85) & (np.abs(y) < 0.85)
    if shape == "triangle":
        return (y > -0.7) & (y < 1.7 * x + 1.0) & (y < -1.7 * x + 1.0)
    if shape == "ring":
        return (r < 1) & (r > 0.55)
    if shape == "cross":
        return ((np.abs(x) < 0.3) | (np.abs(y) < 0.3)) & (np.abs(x) < 1) & (np.abs(y) < 1)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) < 1
    if shape == "bar":
        return (np.abs(x) < 1.1) & (np.abs(y) < 0.35)
    # blob: a wobbly disk, its wobble different in every image
    angle = np.arctan2(y, x)
    phase, lobes = rng.uniform(0, 2 * np.pi), rng.integers(3, 6)
    return r < 0.8 + 0.25 * np.sin(lobes * angle + phase)


def render(family: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB image of a family, with random pose, scale, colour jitter and background."""
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    # Background: a dim random-coloured gradient plus noise, unrelated to the label.
    bg_a, bg_b = rng.uniform(0.05, 0.45, 3), rng.uniform(0.05, 0.45, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + 2) / 4
    image = bg_a * t[..., None] + bg_b * (1 - t[..., None]) + rng.normal(0, 0.04, (size, size, 3))

    angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.6)
    cx, cy = rng.uniform(-0.35, 0.35, 2)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * cos + (yy - cy) * sin) / scale
    v = (-(xx - cx) * sin + (yy - cy) * cos) / scale
    mask = _shape_mask(family["shape"], u, v, rng)

    hue = (family["hue"] / HUES + rng.normal(0, 0.015)) % 1.0
    colour = _hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    if family["texture"] == "stripes":
        shade = 0.6 + 0.4 * (np.sin(u * 9 + rng.uniform(0, 6)) > 0)
    elif family["texture"] == "dots":
        shade = 0.55 + 0.45 * ((np.sin(u * 8) * np.sin(v * 8)) < 0.25)
    else:
        shade = np.ones_like(u)
    image = np.where(mask[..., None], colour * shade[..., None], image)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def dataset_dir(config: GeneratedDataConfig, base: str | Path) -> Path:
    blob = json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
    return Path(base) / f"synthetic-{hashlib.sha256(blob).hexdigest()[:10]}"


def write_once(root: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """Write a generated folder once: `write(tmp)` fills a temporary folder that is renamed to `root`,
    so a half-written folder is never used; `root / marker` existing means it is complete."""
    if (root / marker).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def generate(config: GeneratedDataConfig, base: str | Path = "data/generated") -> Path:
    """Write the dataset once and return its root."""

    def write(tmp: Path) -> None:
        families = mode_families(config)
        splits = [("train", config.train_per_mode), ("val", config.val_per_mode)]
        for split_id, (split, per_mode) in enumerate(splits):
            rows = []
            for fam in families:
                class_dir = tmp / split / f"class_{fam['class']:02d}"
                class_dir.mkdir(parents=True, exist_ok=True)
                for i in range(per_mode):
                    rng = np.random.default_rng([config.seed, split_id, fam["class"], fam["mode"], i])
                    name = f"m{fam['mode']}_{i:04d}.png"
                    Image.fromarray(render(fam, config.image_size, rng)).save(class_dir / name)
                    rows.append({"path": f"{class_dir.name}/{name}", "class": fam["class"],
                                 "submode": fam["submode"]})
            with open(tmp / f"{split}_submodes.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["path", "class", "submode"])
                writer.writeheader()
                writer.writerows(rows)
        meta = {"generator": "pretrain.data.generated", "config": dataclasses.asdict(config), "families": families}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    return write_once(dataset_dir(config, base), "meta.json", write)


def fine_view(root: str | Path) -> Path:
    """The generated dataset relabelled by sub-mode, as any fine-labelled ImageFolder would be:
    `<root>/fine/{train,val}/<class>_m<submode>/` (hard links to the images) and
    `<root>/fine/coarse_map.csv` (`fine,coarse`), which turns it back into the coarse pretraining set."""
    root = Path(root)

    def write(tmp: Path) -> None:
        mapping: dict[str, str] = {}
        for split in ("train", "val"):
            with (root / f"{split}_submodes.csv").open(newline="") as f:
                for row in csv.DictReader(f):
                    coarse = Path(row["path"]).parent.name
                    name = f"{coarse}_m{row['submode']}"
                    mapping[name] = coarse
                    target = tmp / split / name / Path(row["path"]).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(root / split / row["path"], target)
                    except OSError:  # another file system: copy
                        shutil.copyfile(root / split / row["path"], target)
        (tmp / "coarse_map.csv").write_text(
            "fine,coarse\n" + "".join(f"{f},{c}\n" for f, c in sorted(mapping.items())))

    return write_once(root / "fine", "coarse_map.csv", write)
