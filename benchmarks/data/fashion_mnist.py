"""Fashion-MNIST from its four idx files (as distributed, gzip or not) into a coarse-to-fine ImageFolder.

Debian's `dataset-fashion-mnist` package installs them in /usr/share/datasets/fashion-mnist. The 10
fine classes are grouped into 4 coarse ones by what the garment is worn on: tops (t-shirt, pullover,
coat, shirt), bottoms (trouser, dress), footwear (sandal, sneaker, ankle boot) and bags.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from benchmarks.data.coarse_fine import LabelledImages, write_coarse_fine
from pretrain.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Label order of the idx files (Fashion-MNIST's README), as folder-safe names.
FINE_CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                "ankle_boot"]
COARSE_OF = {"tshirt_top": "tops", "pullover": "tops", "coat": "tops", "shirt": "tops",
             "trouser": "bottoms", "dress": "bottoms",
             "sandal": "footwear", "sneaker": "footwear", "ankle_boot": "footwear",
             "bag": "bags"}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_UBYTE = 0x08  # the idx type code of unsigned bytes


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"Fashion-MNIST file {stem}[.gz] not found in {folder} "
                    "(install the Debian package dataset-fashion-mnist: make data-fmnist)")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (Yann LeCun's MNIST format): magic 0x0000TTNN (type, number of dims), big-endian dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] == 0:
        raise UserError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(f"{path}: the header says {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """An array of unsigned bytes as an idx file (what `read_idx` reads): 0, 0, type, number of dims; big-endian
    sizes; the bytes. For the generated copies the tests read."""
    return (bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def read_split(folder: Path, split: str) -> LabelledImages:
    images_file, labels_file = (_find(folder, stem) for stem in FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{images_file} / {labels_file}: expected N images of H x W and N labels, "
                        f"got {images.shape} and {labels.shape}")
    if labels.max(initial=0) >= len(FINE_CLASSES):
        raise UserError(f"{labels_file}: label {labels.max()} outside 0..{len(FINE_CLASSES) - 1}")
    return LabelledImages(images, labels.astype(np.int64))


def prepare_fashion_mnist(out: Path, source: Path = DEBIAN_DIR, train_per_class: int | None = 1000,
                          val_per_class: int | None = 300) -> Path:
    """Write the first `train_per_class` training and `val_per_class` test images of every class (None: all)
    as `<out>/fmnist-<counts>/{train,val}/<fine>/` plus `coarse_map.csv`; returns that folder."""
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"Fashion-MNIST folder not found: {source} (make data-fmnist installs Debian's copy)")
    splits = {"train": read_split(source, "train").first_per_class(train_per_class, 10, "Fashion-MNIST train"),
              "val": read_split(source, "test").first_per_class(val_per_class, 10, "Fashion-MNIST test")}
    digest = hashlib.sha256()
    for split in FILES.values():
        for stem in split:
            digest.update(_find(source, stem).read_bytes())
    record = {"dataset": "fashion-mnist", "folder": str(source.resolve()), "sha256": digest.hexdigest(),
              "train": "first images of each class in the training files", "val": "the same in the test files",
              "train_per_class": train_per_class, "val_per_class": val_per_class}
    name = f"fmnist-{train_per_class or 'all'}-{val_per_class or 'all'}-{digest.hexdigest()[:8]}"
    return write_coarse_fine(Path(out) / name, splits, FINE_CLASSES, COARSE_OF, record)
