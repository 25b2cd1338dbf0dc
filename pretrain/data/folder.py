"""An ImageFolder (ImageNet `train/` layout) that also returns each sample's index.

Checks up front what commonly goes wrong with a dataset path (missing folder, no class folders,
empty class folders) and names the bad file when an image cannot be decoded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from pretrain.errors import CorruptImageError, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_coarse_map(path: str | Path) -> dict[str, str]:
    """A CSV with a header `fine,coarse`: the coarse class of each fine class folder."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise UserError(f"coarse map not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"fine", "coarse"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected a CSV with the header 'fine,coarse'")
        mapping = {}
        for row in reader:
            if row["fine"] in mapping and mapping[row["fine"]] != row["coarse"]:
                raise UserError(f"{path}: fine class {row['fine']!r} is mapped twice")
            mapping[row["fine"]] = row["coarse"]
    return mapping


class IndexedImageFolder(Dataset):
    """Labels are the class folders, or with `coarse_map` (fine folder -> coarse name) the coarse classes."""

    def __init__(self, root: str | Path, transform: Callable | None = None,
                 coarse_map: dict[str, str] | None = None):
        self.root = Path(root)
        if not self.root.exists():
            raise UserError(f"dataset folder not found: {self.root}")
        if not self.root.is_dir():
            raise UserError(f"dataset path is not a folder: {self.root}")
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not self.classes:
            raise UserError(
                f"no class folders in {self.root}: expected the ImageNet layout <root>/<class>/<image>"
            )
        folders = self.classes
        if coarse_map is not None:
            unmapped = [name for name in folders if name not in coarse_map]
            if unmapped:
                raise UserError(f"class folder(s) of {self.root} missing from the coarse map: "
                                + ", ".join(unmapped[:5]) + (" ..." if len(unmapped) > 5 else ""))
            self.classes = sorted({coarse_map[name] for name in folders})
        self.samples: list[tuple[str, int]] = []
        empty = []
        label_of = {name: i for i, name in enumerate(self.classes)}
        for name in folders:
            label = label_of[coarse_map[name] if coarse_map is not None else name]
            files = sorted(
                e.path for e in os.scandir(self.root / name)
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not files:
                empty.append(name)
            self.samples.extend((path, label) for path in files)
        if empty:
            shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise UserError(f"empty class folder(s) in {self.root} (no image files): {shown}")
        self.targets = torch.tensor([label for _, label in self.samples])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise CorruptImageError(f"corrupt image file {path}: {e}") from None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1], index

    def fingerprint(self) -> dict:
        """What a resumed run must find again: the same classes and number of images."""
        classes_hash = hashlib.sha256("\n".join(self.classes).encode()).hexdigest()[:12]
        return {"num_samples": len(self), "num_classes": len(self.classes), "classes_sha256": classes_hash}
