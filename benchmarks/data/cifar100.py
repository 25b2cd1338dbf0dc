"""CIFAR-100 from its python archive (`cifar-100-python.tar.gz`, or that archive unpacked) into a
coarse-to-fine ImageFolder: the 20 superclasses for pretraining, the 100 classes for the probe.

The archive holds `cifar-100-python/{train,test,meta}`, pickled dicts (written by Python 2, so their
keys are bytes): `data` (N x 3072 uint8, the red, green, then blue 32 x 32 planes), `fine_labels`,
`coarse_labels`, and in `meta` the `fine_label_names` and `coarse_label_names`. Unpickling can run
code, so only the few types those files hold (numpy arrays, lists, bytes, numbers) are accepted.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data.coarse_fine import LabelledImages, write_coarse_fine
from pretrain.errors import UserError

MEMBERS = ("train", "test", "meta")


class _ArraysOnly(pickle.Unpickler):
    """Resolves only what numpy array pickles refer to; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(np._core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles spell bytes under Python 3
            import _codecs

            return _codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def unpickle_arrays(blob: bytes, what: str) -> dict[str, Any]:
    """A CIFAR python pickle (CIFAR-10's batches, CIFAR-100's splits) as a dict with str keys."""
    try:
        obj = _ArraysOnly(io.BytesIO(blob), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{what} is not a CIFAR python pickle: {e}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} is not a CIFAR python pickle (a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar_images(data: Any, what: str) -> np.ndarray:
    """A CIFAR pickle's `data` (N x 3072 uint8: the red, green, then blue 32 x 32 planes) as N x 32 x 32 x 3."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{what} data must be an N x 3072 uint8 array")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_members(source: Path) -> dict[str, bytes]:
    """The three pickles from the .tar.gz or from the unpacked folder (`cifar-100-python/` or its parent)."""
    if source.is_file():
        try:
            with tarfile.open(source, "r:*") as archive:
                found = {Path(m.name).name: m for m in archive.getmembers()
                         if m.isfile() and Path(m.name).name in MEMBERS}
                missing = [name for name in MEMBERS if name not in found]
                if missing:
                    raise UserError(f"{source}: no {', '.join(missing)} in the archive (expected cifar-100-python/...)")
                return {name: archive.extractfile(found[name]).read() for name in MEMBERS}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot read {source}: {e}") from None
    folder = source / "cifar-100-python" if (source / "cifar-100-python").is_dir() else source
    missing = [name for name in MEMBERS if not (folder / name).is_file()]
    if not source.exists() or missing:
        raise UserError(f"CIFAR-100 not found at {source}: expected cifar-100-python.tar.gz or a folder with "
                        f"{', '.join(MEMBERS)} (download it from https://www.cs.toronto.edu/~kriz/cifar.html)")
    return {name: (folder / name).read_bytes() for name in MEMBERS}


def _names(values: Any, what: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise UserError(f"{what}: expected a list of class names")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_cifar100(source: Path) -> tuple[dict[str, LabelledImages], list[str], dict[str, str], str]:
    """(splits train/test, fine names, coarse class of each fine class, sha256 of the pickles)."""
    blobs = _read_members(Path(source))
    meta = unpickle_arrays(blobs["meta"], f"{source}: meta")
    fine_names = _names(meta.get("fine_label_names"), f"{source}: meta fine_label_names")
    coarse_names = _names(meta.get("coarse_label_names"), f"{source}: meta coarse_label_names")
    splits, coarse_of = {}, {}
    for split in ("train", "test"):
        record = unpickle_arrays(blobs[split], f"{source}: {split}")
        data, fine, coarse = (record.get(k) for k in ("data", "fine_labels", "coarse_labels"))
        images = cifar_images(data, f"{source}: {split}")
        fine, coarse = np.asarray(fine, dtype=np.int64), np.asarray(coarse, dtype=np.int64)
        if not len(fine) == len(coarse) == len(data):
            raise UserError(f"{source}: {split} has {len(data)} images, {len(fine)} fine and {len(coarse)} "
                            "coarse labels")
        if fine.min(initial=0) < 0 or fine.max(initial=0) >= len(fine_names) or coarse.max(initial=0) >= len(
                coarse_names) or coarse.min(initial=0) < 0:
            raise UserError(f"{source}: {split} labels outside the class lists of meta")
        for f, c in set(zip(fine.tolist(), coarse.tolist(), strict=True)):
            if coarse_of.setdefault(fine_names[f], coarse_names[c]) != coarse_names[c]:
                raise UserError(f"{source}: class {fine_names[f]} belongs to two superclasses")
        splits[split] = LabelledImages(images, fine)
    digest = hashlib.sha256(b"".join(blobs[name] for name in MEMBERS)).hexdigest()
    return splits, fine_names, coarse_of, digest


def prepare_cifar100(out: Path, source: Path, train_per_class: int | None = None,
                     val_per_class: int | None = None) -> Path:
    """Write CIFAR-100 (all 500 + 100 images a class by default) as `<out>/cifar100-.../{train,val}/<fine>/`."""
    splits, fine_names, coarse_of, digest = read_cifar100(Path(source))
    unassigned = [name for name in fine_names if name not in coarse_of]
    if unassigned:
        raise UserError(f"{source}: classes without images: {', '.join(unassigned[:5])}")
    written = {"train": splits["train"].first_per_class(train_per_class, len(fine_names), "CIFAR-100 train"),
               "val": splits["test"].first_per_class(val_per_class, len(fine_names), "CIFAR-100 test")}
    record = {"dataset": "cifar-100", "file": str(Path(source).resolve()), "sha256": digest,
              "train": "training images", "val": "test images",
              "train_per_class": train_per_class, "val_per_class": val_per_class}
    name = f"cifar100-{train_per_class or 'all'}-{val_per_class or 'all'}-{digest[:8]}"
    return write_coarse_fine(Path(out) / name, written, fine_names, coarse_of, record)
