"""The datasets of the many-shot linear protocol (`cls-linear`), read from their official on-disk layouts.

`DATA` is one folder holding each dataset as torchvision's dataset class finds it under its `root` (the
official archive unpacked where `torchvision.datasets.X(DATA, download=True)` puts it):

  caltech101/101_ObjectCategories/ Caltech-101 (102 folders, BACKGROUND_Google included)
  stanford_cars/{cars_train,cars_test,devkit}/, stanford_cars/cars_test_annos_withlabels.mat  Stanford Cars
  cifar-10-batches-py/            CIFAR-10's python archive, unpacked
  cifar-100-python/               CIFAR-100's python archive, unpacked
  dtd/dtd/{images,labels}/        DTD r1.0.1
  fgvc-aircraft-2013b/data/       FGVC-Aircraft 2013b
  flowers-102/{jpg,imagelabels.mat,setid.mat}  Flowers-102
  food-101/{images,meta}/         Food-101
  oxford-iiit-pet/{images,annotations}/  Oxford-IIIT Pets
  SUN397/{ClassName.txt,Training_01.txt,Testing_01.txt,a/abbey/...}  SUN397 and its partitions
  VOCdevkit/VOC2007/              PASCAL VOC 2007 (trainval and test)
  fashion-mnist/                  Fashion-MNIST's four idx files (not one of the protocol's datasets: run when named)

torchvision's classes read Stanford Cars, DTD, FGVC-Aircraft, Food-101, Pets, Flowers-102 (its md5 check of the
two .mat files replaced by an existence check, so that generated files in the same layout pass) and VOC2007
(`VOCDetection` lists and parses the files; the 20 image-level labels are derived here). CIFAR is read by our
reader of the python pickles (`benchmarks/data/cifar100.py`): torchvision's CIFAR classes check the official
files' md5 sums, so they refuse the generated files the tests use in the same layout, and they unpickle with
`pickle.load`, which runs whatever a pickle names; ours accepts only arrays, lists and names. SUN397 is read by
ours too (`SUN397Partition`): torchvision's reads no partition; and Caltech-101 (`Caltech101Split`, the reference's
split of 102 classes): torchvision's leaves out the BACKGROUND_Google class.

Splits are the protocol's (ssl-transfer's `linear.py`): DTD, Aircraft, Flowers-102 and VOC2007 have their own
validation split (DTD's first partition; Aircraft's variants, 100 classes; VOC2007's train / val); the others
carve theirs from the training split (`carve_validation`). Pets' training split is its `trainval` list.

Fashion-MNIST is read for the real-data tier (docs/real-data-tier.md): it is not one of the protocol's datasets,
so a run looks for it only when it is named (`DATASETS=fmnist`) and a run over all datasets never puts it in its
mean. Its folder is Debian's name for it, so `DATA=/usr/share/datasets` finds the packaged copy; it is read by the
tier's reader (`benchmarks/data/fashion_mnist.py`), since torchvision's `FashionMNIST` reads only unpacked files
under `FashionMNIST/raw/`, not the gzipped files as distributed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import Flowers102

from pretrain.errors import UserError


@dataclass(frozen=True)
class ClassificationSet:
    name: str  # as users type it: DATASETS=cifar10,dtd
    title: str
    metric: str  # top1 | mean_per_class | map11
    num_classes: int
    where: str  # the folder under DATA that holds it
    validation: str  # predefined (its own val split) | carved (20 % of train, the protocol's seeded draw)
    # (DATA, split, transform) -> (transformed image, label) pairs; split: train, val, test
    read: Callable[[Path, str, Callable | None], Dataset]
    source: str  # where the data comes from
    in_protocol: bool = True  # False: read only when named, never in the mean of a run over every dataset


class ArrayImages(Dataset):
    """uint8 images N x H x W x 3 (or N x H x W, grey) with a label each, served as PIL images through `transform`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index]).convert("RGB")  # grey images as three equal channels
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def _cifar10(root: Path, split: str, transform: Callable | None) -> Dataset:
    from benchmarks.data.cifar100 import cifar_images, unpickle_arrays

    folder = root / "cifar-10-batches-py"
    members = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [m for m in [*members, "batches.meta"] if not (folder / m).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 incomplete at {folder}: missing {', '.join(missing)}")
    images, labels = [], []
    for member in members:
        record = unpickle_arrays((folder / member).read_bytes(), f"{folder / member}")
        images.append(cifar_images(record.get("data"), f"{folder / member}:"))
        labels.append(np.asarray(record.get("labels"), dtype=np.int64))
    return ArrayImages(np.concatenate(images), np.concatenate(labels), transform)


def _cifar100(root: Path, split: str, transform: Callable | None) -> Dataset:
    from benchmarks.data.cifar100 import read_cifar100

    splits, _, _, _ = read_cifar100(root / "cifar-100-python")
    data = splits["train" if split == "train" else "test"]
    return ArrayImages(data.images, data.fine, transform)


def _fashion_mnist(root: Path, split: str, transform: Callable | None) -> Dataset:
    from benchmarks.data.fashion_mnist import read_split as read_idx_split

    data = read_idx_split(root / "fashion-mnist", "train" if split == "train" else "test")
    return ArrayImages(data.images, data.fine, transform)


class Flowers102Files(Flowers102):
    """torchvision's reader, its md5 check of the two .mat files replaced by a check that they exist."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / "flowers-102"
        return (base / "jpg").is_dir() and all((base / name).is_file() for name in ("imagelabels.mat", "setid.mat"))


class LabelledFiles(Dataset):
    """Image files with a label each (`_image_files`, `labels`: a class index, or a row of binary labels), served
    as RGB PIL images through `transform`: what our readers build."""

    _image_files: list
    labels: np.ndarray
    transform: Callable | None

    def __len__(self) -> int:
        return len(self._image_files)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        with Image.open(self._image_files[index]) as image:
            image = image.convert("RGB")
        label = self.labels[index]
        return (self.transform(image) if self.transform else image), (
            torch.from_numpy(label) if label.ndim else int(label))


class VOC2007Labels(LabelledFiles):
    """VOC2007 as 20 binary labels per image (torchvision's `VOCDetection` lists and parses the files): a class
    is positive when the image has an object of it not marked difficult, the `1` of the devkit's
    `ImageSets/Main/<class>_<split>.txt`; images with only difficult ones (`0` there) count as negatives, as in
    the reference (`target == 1`)."""

    def __init__(self, root: Path, split: str, transform: Callable | None):
        import xml.etree.ElementTree as ET

        from torchvision.datasets import VOCDetection

        from benchmarks.data.voc_detection import VOC_CLASSES

        voc = VOCDetection(str(root), year="2007", image_set=split)
        self.labels = np.zeros((len(voc), len(VOC_CLASSES)), dtype=np.int64)
        for index, path in enumerate(voc.annotations):
            objects = voc.parse_voc_xml(ET.parse(path).getroot())["annotation"].get("object", [])
            for obj in objects:
                if obj.get("difficult", "0") != "1":
                    self.labels[index, VOC_CLASSES.index(obj["name"])] = 1
        self._image_files, self.transform = list(voc.images), transform


class Caltech101Split(LabelledFiles):
    """Caltech-101 with the reference's split: its 102 folders (BACKGROUND_Google included, as class 0) in
    ImageFolder's order, then per class 30 draws with replacement by numpy's legacy generator seeded 0
    (ssl-transfer's `create_caltech101_splits`); the distinct images drawn train, all others test. The lists its
    repository holds at the pinned commit are exactly these (checked against them: 2,416 training and 6,728 test
    images; its first lists kept the repeated draws, 3,060 lines). torchvision's `Caltech101` leaves out
    BACKGROUND_Google, so this reader is ours."""

    PER_CLASS = 30

    def __init__(self, root: Path, split: str, transform: Callable | None):
        from torchvision.datasets import ImageFolder

        folder = root / "caltech101" / "101_ObjectCategories"
        images = ImageFolder(str(folder))
        by_class: dict[int, list[int]] = {label: [] for label in range(len(images.classes))}
        for index, (_, label) in enumerate(images.samples):
            by_class[label].append(index)
        generator = np.random.RandomState(0)
        drawn = set()
        for label in by_class:
            drawn.update(int(i) for i in generator.choice(by_class[label], self.PER_CLASS))
        keep = sorted(drawn) if split == "train" else [i for i in range(len(images.samples)) if i not in drawn]
        self._image_files = [images.samples[i][0] for i in keep]
        self.labels = np.asarray([images.samples[i][1] for i in keep], dtype=np.int64)
        self.classes, self.transform = images.classes, transform


class SUN397Partition(LabelledFiles):
    """SUN397 with its first train / test partition (`Training_01.txt`, `Testing_01.txt`, from the dataset's
    Partitions.zip, in the `SUN397/` folder as the reference reads them). torchvision's `SUN397` reads every image
    and no partition, so this reader is ours. Classes are `ClassName.txt`'s names (`/a/abbey` -> `abbey`), sorted;
    an image's class is its folder below the letter, as in torchvision's reader."""

    def __init__(self, root: Path, split: str, transform: Callable | None):
        base = root / "SUN397"
        listing = base / {"train": "Training_01.txt", "test": "Testing_01.txt"}[split]
        missing = [p.name for p in (base / "ClassName.txt", listing) if not p.is_file()]
        if missing:
            raise UserError(f"SUN397 incomplete at {base}: missing {', '.join(missing)} (the partition files are in "
                            "the dataset's Partitions.zip)")
        classes = sorted(line.strip()[3:] for line in (base / "ClassName.txt").read_text().splitlines() if line.strip())
        index = {name: i for i, name in enumerate(classes)}
        self._image_files, labels = [], []
        for line in listing.read_text().splitlines():
            if line.strip():
                relative = line.strip().lstrip("/")
                self._image_files.append(base / relative)
                labels.append(index["/".join(relative.split("/")[1:-1])])
        self.labels, self.classes, self.transform = np.asarray(labels, dtype=np.int64), classes, transform


def _torchvision(cls_name: str, split_names: dict[str, str], **kwargs: Any
                 ) -> Callable[[Path, str, Callable | None], Dataset]:
    def read(root: Path, split: str, transform: Callable | None) -> Dataset:
        import torchvision.datasets

        return getattr(torchvision.datasets, cls_name)(str(root), split=split_names[split], transform=transform,
                                                       **kwargs)

    return read


DATASETS: dict[str, ClassificationSet] = {s.name: s for s in (
    ClassificationSet("aircraft", "FGVC-Aircraft", "mean_per_class", 100, "fgvc-aircraft-2013b", "predefined",
                      _torchvision("FGVCAircraft", {"train": "train", "val": "val", "test": "test"},
                                   annotation_level="variant"),
                      "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz)"),
    ClassificationSet("caltech101", "Caltech-101", "mean_per_class", 102, "caltech101/101_ObjectCategories",
                      "carved", Caltech101Split,
                      "https://data.caltech.edu/records/mzrjq-6wc02 (101_ObjectCategories, under DATA/caltech101/)"),
    ClassificationSet("cars", "Stanford Cars", "top1", 196, "stanford_cars", "carved",
                      _torchvision("StanfordCars", {"train": "train", "test": "test"}),
                      "the Stanford Cars images and devkit (cars_train, cars_test, devkit/, and "
                      "cars_test_annos_withlabels.mat beside them, under DATA/stanford_cars/)"),
    ClassificationSet("cifar10", "CIFAR-10", "top1", 10, "cifar-10-batches-py", "carved", _cifar10,
                      "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)"),
    ClassificationSet("cifar100", "CIFAR-100", "top1", 100, "cifar-100-python", "carved", _cifar100,
                      "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz)"),
    ClassificationSet("dtd", "DTD", "top1", 47, "dtd/dtd", "predefined",
                      _torchvision("DTD", {"train": "train", "val": "val", "test": "test"}, partition=1),
                      "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz, under DATA/dtd/)"),
    ClassificationSet("flowers102", "Flowers-102", "mean_per_class", 102, "flowers-102", "predefined",
                      lambda root, split, transform: Flowers102Files(str(root), split=split, transform=transform),
                      "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, "
                      "setid.mat, under DATA/flowers-102/)"),
    ClassificationSet("food101", "Food-101", "top1", 101, "food-101", "carved",
                      _torchvision("Food101", {"train": "train", "test": "test"}),
                      "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (food-101.tar.gz)"),
    ClassificationSet("pets", "Oxford-IIIT Pets", "mean_per_class", 37, "oxford-iiit-pet", "carved",
                      _torchvision("OxfordIIITPet", {"train": "trainval", "test": "test"}),
                      "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz and annotations.tar.gz)"),
    ClassificationSet("sun397", "SUN397", "top1", 397, "SUN397", "carved", SUN397Partition,
                      "https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz and Partitions.zip, unpacked "
                      "into DATA/SUN397/)"),
    ClassificationSet("voc2007", "VOC2007 classification", "map11", 20, "VOCdevkit/VOC2007", "predefined",
                      VOC2007Labels,
                      "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ (VOCtrainval_06-Nov-2007.tar, "
                      "VOCtest_06-Nov-2007.tar)"),
    ClassificationSet("fmnist", "Fashion-MNIST", "top1", 10, "fashion-mnist", "carved", _fashion_mnist,
                      "Debian's dataset-fashion-mnist (make data-fmnist; DATA=/usr/share/datasets), or the four idx "
                      "files of https://github.com/zalandoresearch/fashion-mnist", in_protocol=False),
)}
PROTOCOL_DATASETS = [name for name, s in DATASETS.items() if s.in_protocol]  # the protocol's own (ssl-transfer's)


def carve_validation(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) as ssl-transfer draws them: numpy's legacy generator seeded with 0
    shuffles range(n); the first floor(fraction * n) are the validation split."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    cut = int(np.floor(fraction * n))
    return order[cut:], order[:cut]


def check_names(names: list[str]) -> None:
    """One error naming every unknown dataset name, and the known ones."""
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UserError(f"unknown cls-linear dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")


def select(root: Path, names: list[str] | None) -> tuple[list[ClassificationSet], list[str]]:
    """(the datasets to run, one line per dataset not found): all of the protocol's that are under `root`, or those
    named, each of which must be there."""
    if names:
        check_names(names)
        absent = [f"{n} (looked for {root / DATASETS[n].where})" for n in names if not (root / DATASETS[n].where)
                  .is_dir()]
        if absent:
            raise UserError(f"cls-linear dataset(s) not found: {'; '.join(absent)}")
        return [DATASETS[n] for n in names], []
    protocol = [DATASETS[n] for n in PROTOCOL_DATASETS]
    found = [s for s in protocol if (root / s.where).is_dir()]
    skipped = [f"{s.name}: not found at {root / s.where} ({s.source})" for s in protocol if s not in found]
    if not found:
        extras = [f"{s.where}/ is there: name it with DATASETS={s.name}" for s in DATASETS.values()
                  if not s.in_protocol and (root / s.where).is_dir()]
        raise UserError(f"no cls-linear dataset under {root}: looked for " + ", ".join(
            f"{s.where}/ ({s.name})" for s in protocol) + "".join(f" ({line})" for line in extras))
    return found, skipped


def read_split(spec: ClassificationSet, root: Path, split: str, transform: Callable | None = None) -> Dataset:
    """One split, or one clear error naming the dataset and what its reader missed."""
    try:
        return spec.read(root, split, transform)
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"{spec.title} under {root / spec.where} cannot be read ({split} split): {e}") from None


def image_paths(dataset: Dataset) -> list[str] | None:
    """The files behind a torchvision dataset, for naming a bad one (None for arrays)."""
    for attribute in ("_image_files", "_images"):
        paths = getattr(dataset, attribute, None)
        if paths is not None:
            return [str(p) for p in paths]
    samples = getattr(dataset, "_samples", None)  # StanfordCars: (path, label) pairs
    return None if samples is None else [str(path) for path, _ in samples]


def labels_of(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "_labels", None)
    if labels is None and hasattr(dataset, "_samples"):
        labels = [label for _, label in dataset._samples]
    if labels is None:
        labels = dataset.labels
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)
