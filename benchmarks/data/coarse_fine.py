"""Write a labelled image array as a coarse-to-fine ImageFolder, the layout every proxy dataset ends in.

<root>/train/<fine class>/<n>.png, <root>/val/<fine class>/<n>.png and <root>/coarse_map.csv
(`fine,coarse`). Pretraining reads `train/` with `data.coarse_map=<root>/coarse_map.csv` (coarse
labels); the probe reads `train/` and `val/` (fine labels) and the same map for its diagnostics.
`<root>/dataset.json` records the source and the counts, and marks the folder complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pretrain.data.generated import write_once
from pretrain.errors import UserError


@dataclass
class LabelledImages:
    """uint8 images, N x H x W (grey) or N x H x W x 3 (RGB), with a fine label per image."""

    images: np.ndarray
    fine: np.ndarray

    def first_per_class(self, count: int | None, num_classes: int, what: str) -> LabelledImages:
        """The first `count` images of every class in file order (all of them for None)."""
        if count is None:
            return self
        index = first_of_each_class(self.fine, count, range(num_classes), what)
        return LabelledImages(self.images[index], self.fine[index])


def first_of_each_class(labels: np.ndarray, count: int, classes: Iterable[int], what: str) -> np.ndarray:
    """The indices of the first `count` images of each of `classes` (labels in file order), sorted; one error
    naming `what` and the class when a class has fewer."""
    keep = []
    for label in classes:
        found = np.flatnonzero(labels == label)
        if len(found) < count:
            raise UserError(f"{what}: class {label} has {len(found)} images, fewer than the {count} asked for")
        keep.append(found[:count])
    return np.sort(np.concatenate(keep))


def write_coarse_fine(root: Path, splits: dict[str, LabelledImages], fine_names: list[str],
                      coarse_of: dict[str, str], source: dict[str, Any]) -> Path:
    """Write `splits` ({"train": ..., "val": ...}) once under `root` and return it."""
    missing = [name for name in fine_names if name not in coarse_of]
    if missing:
        raise ValueError(f"fine classes without a coarse class: {missing}")

    def write(tmp: Path) -> None:
        counts = {}
        for split, data in splits.items():
            for name in fine_names:
                (tmp / split / name).mkdir(parents=True, exist_ok=True)
            for n, (image, label) in enumerate(zip(data.images, data.fine, strict=True)):
                Image.fromarray(image).save(tmp / split / fine_names[int(label)] / f"{n:06d}.png")
            counts[split] = {name: int((data.fine == label).sum()) for label, name in enumerate(fine_names)}
        (tmp / "coarse_map.csv").write_text("fine,coarse\n" + "".join(f"{f},{coarse_of[f]}\n" for f in fine_names))
        (tmp / "dataset.json").write_text(json.dumps({"source": source, "images": counts,
                                                      "coarse_classes": sorted(set(coarse_of.values()))}, indent=1))

    return write_once(root, "dataset.json", write)
