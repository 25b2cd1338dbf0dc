"""Tiny datasets written in the official on-disk layouts of the cls-linear datasets (benchmarks/data/classification.py):
what the readers are tested on and what `cls-linear`'s smoke schedule runs on.

Every class is a colour with noise, so a linear classifier on any features separates them; a few classes and a
few images per split, of sizes between 36 and 60 px. The files are what each reader parses: CIFAR's python
pickles (Python 2 protocol, bytes keys), Caltech-101's class folders, Stanford Cars' devkit `.mat` files
(`annotations` records with `class` and `fname`), SUN397's `ClassName.txt` and first partition `Training_01.txt`
/ `Testing_01.txt`, DTD's `labels/{train,val,test}1.txt`, Aircraft's `variants.txt` and
`images_variant_{split}.txt`, Flowers-102's `imagelabels.mat` and `setid.mat` (MATLAB files, 1-based),
Food-101's `meta/{classes.txt,train.json,test.json}`, Pets' `annotations/{trainval,test}.txt`
(`Image CLASS-ID SPECIES BREED-ID`), VOC2007's devkit (`benchmarks/data/voc_detection.py`: annotations with
difficult objects, `ImageSets/Main/{train,val,trainval,test}.txt`), and Fashion-MNIST's four gzipped idx files
(28 x 28 grey images).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from pretrain.data.generated import write_once

CLASSES = 3
PER_SPLIT = {"train": 8, "val": 3, "test": 4}  # images per class; carved datasets put train + val in train


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    height, width = (int(v) for v in rng.integers(36, 61, 2))
    colour = np.array([(label * 97 + 40) % 256, (label * 151 + 90) % 256, (label * 53 + 160) % 256], np.float32)
    pixels = colour + rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _caltech101(root: Path, rng: np.random.Generator) -> None:
    folder = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(["BACKGROUND_Google", "Faces", "accordion"][:CLASSES]):  # ImageFolder's order
        (folder / name).mkdir(parents=True)
        for i in range(40):  # more than the 30 draws per class, so that every class has test images
            _image(rng, c).save(folder / name / f"image_{i + 1:04d}.jpg", quality=90)


def _cars(root: Path, rng: np.random.Generator) -> None:
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array([f"Make Model {c} 2012" for c in range(CLASSES)], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names[None, :]})
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    for split, count, where in (("train", PER_SPLIT["train"] + PER_SPLIT["val"], base / "devkit"),
                                ("test", PER_SPLIT["test"], base)):
        (base / f"cars_{split}").mkdir()
        rows = []
        for i in range(count * CLASSES):
            c = i % CLASSES
            image = _image(rng, c)
            name = f"{i + 1:05d}.jpg"
            image.save(base / f"cars_{split}" / name, quality=90)
            rows.append((1, 1, image.width, image.height, c + 1, name))
        annotations = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
        for i, row in enumerate(rows):
            annotations[0, i] = row
        file = "cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
        savemat(where / file, {"annotations": annotations})


def _sun397(root: Path, rng: np.random.Generator) -> None:
    base = root / "SUN397"
    classes = ["/a/abbey", "/b/barn/outdoor", "/c/canyon"][:CLASSES]
    (base / "ClassName.txt").parent.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for split, file, count in (("train", "Training_01.txt", PER_SPLIT["train"] + PER_SPLIT["val"]),
                               ("test", "Testing_01.txt", PER_SPLIT["test"])):
        lines = []
        for c, name in enumerate(classes):
            (base / name.lstrip("/")).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                relative = f"{name}/sun_{split}{c}{i:04d}.jpg"
                _image(rng, c).save(base / relative.lstrip("/"), quality=90)
                lines.append(relative)
        (base / file).write_text("\n".join(lines) + "\n")
    # images of the full set outside the first partition: listed by torchvision's reader, not by the protocol's
    _image(rng, 0).save(base / "a" / "abbey" / "sun_unlisted.jpg", quality=90)


def _cifar_pickle(obj: dict) -> bytes:
    return pickle.dumps({k.encode(): v for k, v in obj.items()}, protocol=2)


def _cifar_arrays(rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[int]]:
    labels = [i % CLASSES for i in range(count)]
    images = np.stack([np.asarray(_image(rng, label).resize((32, 32))) for label in labels])
    return images.transpose(0, 3, 1, 2).reshape(count, 3072), labels


def _cifar10(root: Path, rng: np.random.Generator) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"class{c}".encode() for c in range(CLASSES)]
    (folder / "batches.meta").write_bytes(_cifar_pickle({"label_names": names, "num_cases_per_batch": 6}))
    for member, count in [(f"data_batch_{i}", 6) for i in range(1, 6)] + [("test_batch", 12)]:
        data, labels = _cifar_arrays(rng, count)
        (folder / member).write_bytes(_cifar_pickle({"batch_label": member.encode(), "labels": labels, "data": data,
                                                     "filenames": [f"{member}_{i}.png".encode()
                                                                   for i in range(count)]}))


def _cifar100(root: Path, rng: np.random.Generator) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"fine{c}".encode() for c in range(CLASSES)]
    (folder / "meta").write_bytes(_cifar_pickle({"fine_label_names": fine, "coarse_label_names": [b"all"]}))
    for member, count in (("train", 33), ("test", 12)):
        data, labels = _cifar_arrays(rng, count)
        (folder / member).write_bytes(_cifar_pickle({"batch_label": member.encode(), "fine_labels": labels,
                                                     "coarse_labels": [0] * count, "data": data}))


def _dtd(root: Path, rng: np.random.Generator) -> None:
    folder = root / "dtd" / "dtd"
    classes = [f"texture{c}" for c in range(CLASSES)]
    for split, count in PER_SPLIT.items():
        lines = []
        for c, name in enumerate(classes):
            (folder / "images" / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                file = f"{name}_{split}{i:04d}.jpg"
                _image(rng, c).save(folder / "images" / name / file, quality=90)
                lines.append(f"{name}/{file}")
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def _aircraft(root: Path, rng: np.random.Generator) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    variants = [f"7{c}7-{c}00" for c in range(CLASSES)]  # names with a space-free form, as "707-320"
    variants[0] = "A300B4"
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    image_id = 1000000
    for split, count in PER_SPLIT.items():
        lines = []
        for c, variant in enumerate(variants):
            for _ in range(count):
                image_id += 1
                _image(rng, c).save(data / "images" / f"{image_id:07d}.jpg", quality=90)
                lines.append(f"{image_id:07d} {variant}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def _flowers102(root: Path, rng: np.random.Generator) -> None:
    from scipy.io import savemat

    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for key, split in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
        for c in range(CLASSES):
            for _ in range(PER_SPLIT[split]):
                labels.append(c + 1)  # 1-based, as imagelabels.mat
                ids[key].append(len(labels))
                _image(rng, c).save(base / "jpg" / f"image_{len(labels):05d}.jpg", quality=90)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(base / "setid.mat", {key: np.array([value], dtype=np.uint16) for key, value in ids.items()})


def _voc2007(root: Path, rng: np.random.Generator) -> None:
    from benchmarks.data.voc_detection import write_voc_year

    # VOC's train / val halves of trainval, and test; every class has a non-difficult object in each split
    write_voc_year(root / "VOCdevkit" / "VOC2007", 2007, {"trainval": 24, "test": 20}, int(rng.integers(1000)))


def _food101(root: Path, rng: np.random.Generator) -> None:
    base = root / "food-101"
    classes = [f"dish_{c}" for c in range(CLASSES)]
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    counter = 0
    for split, count in (("train", PER_SPLIT["train"] + PER_SPLIT["val"]), ("test", PER_SPLIT["test"])):
        listing = {}
        for c, name in enumerate(classes):
            (base / "images" / name).mkdir(parents=True, exist_ok=True)
            listing[name] = []
            for _ in range(count):
                counter += 1
                _image(rng, c).save(base / "images" / name / f"{counter}.jpg", quality=90)
                listing[name].append(f"{name}/{counter}")
        (base / "meta" / f"{split}.json").write_text(json.dumps(listing))


def _pets(root: Path, rng: np.random.Generator) -> None:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir(parents=True)
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)][:CLASSES]
    for split, count in (("trainval", PER_SPLIT["train"] + PER_SPLIT["val"]), ("test", PER_SPLIT["test"])):
        lines = []
        for c, (breed, species) in enumerate(breeds):
            for i in range(count):
                image_id = f"{breed}_{split}{i}"
                _image(rng, c).save(base / "images" / f"{image_id}.jpg", quality=90)
                lines.append(f"{image_id} {c + 1} {species} {i + 1}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _fmnist(root: Path, rng: np.random.Generator) -> None:
    import gzip

    from benchmarks.data.fashion_mnist import idx_bytes

    base = root / "fashion-mnist"
    base.mkdir(parents=True)
    for prefix, count in (("train", PER_SPLIT["train"] + PER_SPLIT["val"]), ("t10k", PER_SPLIT["test"])):
        labels = np.tile(np.arange(CLASSES, dtype=np.uint8), count)
        rng.shuffle(labels)
        grey = (labels.astype(np.float32) * 80 + 40)[:, None, None] + rng.normal(0, 20, (len(labels), 28, 28))
        for kind, array in (("images-idx3", np.clip(grey, 0, 255).astype(np.uint8)), ("labels-idx1", labels)):
            (base / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))


WRITERS = {"aircraft": _aircraft, "caltech101": _caltech101, "cars": _cars, "cifar10": _cifar10,
           "cifar100": _cifar100, "dtd": _dtd, "flowers102": _flowers102, "food101": _food101, "pets": _pets,
           "sun397": _sun397, "voc2007": _voc2007, "fmnist": _fmnist}


def generate_classification(base: str | Path = "data/generated", seed: int = 0) -> Path:
    """Every dataset's tiny copy under one root (`<base>/cls-linear-<seed>/`), written once."""
    root = Path(base) / f"cls-linear-{seed}"

    def write(tmp: Path) -> None:
        for index, writer in enumerate(WRITERS.values()):
            writer(tmp, np.random.default_rng([seed, index]))
        (tmp / "generated.json").write_text(json.dumps({"generator": __name__, "seed": seed,
                                                        "datasets": list(WRITERS), "classes": CLASSES}))

    return write_once(root, "generated.json", write)
