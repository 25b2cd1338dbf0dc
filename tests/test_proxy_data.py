"""The real-data readers (Fashion-MNIST idx, CIFAR-100 python archive) on small files written here in
the exact formats, and the coarse-to-fine ImageFolder they produce."""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.data.cifar100 import prepare_cifar100
from benchmarks.data.fashion_mnist import COARSE_OF, FINE_CLASSES, idx_bytes, prepare_fashion_mnist, read_idx
from pretrain.data import IndexedImageFolder, read_coarse_map
from pretrain.errors import UserError


def write_fmnist(folder: Path, train_per_class: int = 3, test_per_class: int = 2, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{split}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_becomes_a_coarse_to_fine_image_folder(tmp_path, gz):
    source = tmp_path / "fm"
    source.mkdir()
    arrays = write_fmnist(source, gz=gz)
    root = prepare_fashion_mnist(tmp_path / "out", source, train_per_class=2, val_per_class=1)

    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(FINE_CLASSES)
    assert read_coarse_map(root / "coarse_map.csv") == COARSE_OF
    # the first images of each class in file order, pixel for pixel
    for split, file_split, count in (("train", "train", 2), ("val", "t10k", 1)):
        images, labels = arrays[file_split]
        for label, name in enumerate(FINE_CLASSES):
            expected = images[np.flatnonzero(labels == label)[:count]]
            written = [np.asarray(Image.open(p)) for p in sorted((root / split / name).iterdir())]
            assert len(written) == count
            assert all(np.array_equal(w, e) for w, e in zip(written, expected, strict=True))
    # pretraining reads it with coarse labels: 4 garment groups
    coarse = IndexedImageFolder(root / "train", coarse_map=read_coarse_map(root / "coarse_map.csv"))
    assert coarse.classes == ["bags", "bottoms", "footwear", "tops"] and len(coarse) == 20
    assert sorted(coarse.targets.tolist()).count(coarse.classes.index("tops")) == 8  # 4 fine classes x 2
    # written once: a second call reuses the folder
    marker = root / "dataset.json"
    mtime = marker.stat().st_mtime_ns
    assert prepare_fashion_mnist(tmp_path / "out", source, 2, 1) == root and marker.stat().st_mtime_ns == mtime


def test_fashion_mnist_bad_files_are_one_clear_error(tmp_path):
    source = tmp_path / "fm"
    source.mkdir()
    write_fmnist(source)
    with pytest.raises(UserError, match="fewer than the 5 asked for"):
        prepare_fashion_mnist(tmp_path / "out", source, train_per_class=5, val_per_class=1)
    good = (source / "train-images-idx3-ubyte.gz").read_bytes()
    (source / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-100]))
    with pytest.raises(UserError, match="header says"):
        read_idx(source / "train-images-idx3-ubyte.gz")
    (source / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read"):
        prepare_fashion_mnist(tmp_path / "out", source, 2, 1)
    (source / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(20)))
    with pytest.raises(UserError, match="not an idx file of unsigned bytes"):
        read_idx(source / "train-images-idx3-ubyte.gz")
    (source / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte"):
        prepare_fashion_mnist(tmp_path / "out", source, 2, 1)
    with pytest.raises(UserError, match="not found"):
        prepare_fashion_mnist(tmp_path / "out", tmp_path / "nowhere", 2, 1)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


FINE_NAMES = ["apple", "maple_tree", "oak_tree", "rocket", "tank", "aquarium_fish"]
COARSE_NAMES = ["fruit_and_vegetables", "trees", "vehicles_2", "fish"]
COARSE_OF_FINE = [0, 1, 1, 2, 2, 3]


def cifar_pickle(obj: dict) -> bytes:
    """As the archive's Python 2 pickles read under Python 3: bytes keys and strings, numpy arrays."""
    return pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2)


def write_cifar(path: Path, per_class: dict[str, int] | None = None, extra_member: bytes | None = None) -> dict:
    per_class = per_class or {"train": 3, "test": 2}
    rng = np.random.default_rng(1)
    splits = {}
    members = {"meta": cifar_pickle({"fine_label_names": [n.encode() for n in FINE_NAMES],
                                     "coarse_label_names": [n.encode() for n in COARSE_NAMES]})}
    for split, count in per_class.items():
        fine = np.tile(np.arange(len(FINE_NAMES)), count)
        rng.shuffle(fine)
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        splits[split] = (data, fine)
        members[split] = cifar_pickle({"batch_label": f"{split} batch".encode(), "fine_labels": fine.tolist(),
                                       "coarse_labels": [COARSE_OF_FINE[f] for f in fine],
                                       "filenames": [f"{i}.png".encode() for i in range(len(fine))], "data": data})
    if extra_member is not None:
        members["train"] = extra_member
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return splits


def test_cifar100_archive_becomes_a_coarse_to_fine_image_folder(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    splits = write_cifar(archive)
    root = prepare_cifar100(tmp_path / "out", archive)

    with (root / "coarse_map.csv").open() as f:
        mapping = {row["fine"]: row["coarse"] for row in csv.DictReader(f)}
    assert mapping == {f: COARSE_NAMES[c] for f, c in zip(FINE_NAMES, COARSE_OF_FINE, strict=True)}
    for split, file_split in (("train", "train"), ("val", "test")):
        data, fine = splits[file_split]
        for label, name in enumerate(FINE_NAMES):
            rows = data[fine == label]
            written = [np.asarray(Image.open(p)) for p in sorted((root / split / name).iterdir())]
            assert len(written) == len(rows)
            for image, row in zip(written, rows, strict=True):
                # the row is the red, green and blue 32 x 32 planes, in that order
                assert image.shape == (32, 32, 3)
                assert np.array_equal(image, row.reshape(3, 32, 32).transpose(1, 2, 0))

    # the unpacked archive works the same
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    again = prepare_cifar100(tmp_path / "out2", unpacked)
    assert sorted(os.listdir(again / "train")) == sorted(FINE_NAMES)


class Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar100_bad_archives_are_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    write_cifar(evil, extra_member=pickle.dumps({b"data": Shell()}, protocol=2))
    with pytest.raises(UserError, match="refusing to load posix.system"):
        prepare_cifar100(tmp_path / "out", evil)

    with pytest.raises(UserError, match="CIFAR-100 not found"):
        prepare_cifar100(tmp_path / "out", tmp_path / "missing")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="cannot read"):
        prepare_cifar100(tmp_path / "out", tmp_path / "broken.tar.gz")
    wrong = tmp_path / "wrong.tar.gz"
    write_cifar(wrong, extra_member=cifar_pickle({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1],
                                                  "coarse_labels": [0, 1]}))
    with pytest.raises(UserError, match="N x 3072 uint8"):
        prepare_cifar100(tmp_path / "out", wrong)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
