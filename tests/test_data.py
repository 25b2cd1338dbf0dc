"""The embedded dataset (deterministic, sub-modes recorded and distinct), the ImageFolder reader, backbones."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from pretrain.config import GeneratedDataConfig
from pretrain.data import IndexedImageFolder
from pretrain.data.generated import generate, mode_families
from pretrain.models import TRANSFERABLE_ARCHS, build_backbone

SMALL = GeneratedDataConfig(num_classes=3, modes_per_class=3, train_per_mode=4, val_per_mode=2, image_size=24, seed=5)


def file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_generated_dataset_is_a_pure_function_of_its_seed(tmp_path):
    a = generate(SMALL, tmp_path / "a")
    b = generate(SMALL, tmp_path / "b")
    assert file_bytes(a) == file_bytes(b)
    assert len(file_bytes(a)) == 3 * 3 * (4 + 2)
    other = generate(GeneratedDataConfig(**{**SMALL.__dict__, "seed": 6}), tmp_path / "c")
    assert file_bytes(other) != file_bytes(a)
    # a second call reuses the finished folder instead of writing again
    assert generate(SMALL, tmp_path / "a") == a


def test_submodes_are_recorded_for_every_image_and_are_distinct_families(tmp_path):
    root = generate(SMALL, tmp_path)
    for split, per_mode in (("train", 4), ("val", 2)):
        with open(root / f"{split}_submodes.csv") as f:
            rows = list(csv.DictReader(f))
        on_disk = sorted(p.relative_to(root / split).as_posix() for p in (root / split).rglob("*.png"))
        assert sorted(r["path"] for r in rows) == on_disk
        for c in range(3):
            submodes = {int(r["submode"]) for r in rows if int(r["class"]) == c}
            assert submodes == {3 * c, 3 * c + 1, 3 * c + 2}
            assert all(r["path"].startswith(f"class_{c:02d}/") for r in rows if int(r["class"]) == c)
        assert len(rows) == 3 * 3 * per_mode
    families = json.loads((root / "meta.json").read_text())["families"]
    assert families == mode_families(SMALL)
    keys = {(f["shape"], f["hue"], f["texture"]) for f in families}
    assert len(keys) == 9  # no two sub-modes share a (shape, hue, texture) family


def test_image_folder_returns_index_and_label(tmp_path):
    root = generate(SMALL, tmp_path) / "train"
    dataset = IndexedImageFolder(root)
    assert dataset.classes == ["class_00", "class_01", "class_02"]
    assert len(dataset) == 36 and dataset.targets.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    image, label, index = dataset[13]
    assert image.size == (24, 24) and image.mode == "RGB" and label == 1 and index == 13
    assert dataset.fingerprint()["num_samples"] == 36


@pytest.mark.parametrize("arch, dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048)])
def test_transferable_backbones_build_without_weights(arch, dim):
    assert arch in TRANSFERABLE_ARCHS
    model, feature_dim = build_backbone(arch)
    assert feature_dim == dim
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, dim)
    assert not any(name.startswith("fc.") for name in model.state_dict())


def test_imagenet_like_jpegs_are_written_once_as_declared_and_read_by_the_loader(tmp_path):
    import json

    from PIL import Image

    from pretrain.config import DataConfig
    from pretrain.data import IndexedImageFolder, train_transform
    from pretrain.data.imagenet_like import ImageNetLikeConfig, describe, generate_imagenet_like

    root = generate_imagenet_like(ImageNetLikeConfig(images=12, classes=3, seed=5), tmp_path)
    files = sorted(root.glob("*/*.JPEG"))
    assert len(files) == 12 and len({f.parent.name for f in files}) == 3
    sizes = []
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.append(image.size)
    # the long side is 500 px or in 200-600, the aspect ratio one of the declared five
    assert all(max(size) == 500 or 200 <= max(size) <= 600 for size in sizes)
    assert all(min(abs(w / h - a) for a in (4 / 3, 3 / 2, 3 / 4, 2 / 3, 1.0)) < 0.01 for w, h in sizes)
    record = json.loads((root.parent / "dataset.json").read_text())
    assert record["mean_bytes"] == sum(f.stat().st_size for f in files) / 12
    assert describe(root).startswith("12 generated ImageNet-like JPEGs, mean ")
    # written once, the same from the seed
    before = {f.name: f.read_bytes() for f in files}
    assert generate_imagenet_like(ImageNetLikeConfig(images=12, classes=3, seed=5), tmp_path) == root
    assert {f.name: f.read_bytes() for f in sorted(root.glob("*/*.JPEG"))} == before
    image, _, _ = IndexedImageFolder(root, transform=train_transform(DataConfig(image_size=64)))[0]
    assert tuple(image.shape) == (3, 64, 64)


def test_the_data_path_timer_gives_each_path_its_cpu_time_and_the_cores_it_takes(tmp_path):
    from pretrain.data.imagenet_like import ImageNetLikeConfig, generate_imagenet_like
    from pretrain.errors import UserError
    from pretrain.timers.data_time import jpeg_paths, markdown, time_paths

    paths = jpeg_paths(generate_imagenet_like(ImageNetLikeConfig(images=4), tmp_path), 3)
    rows = time_paths(paths, rate=1000.0, image_size=64)
    assert [r["path"] for r in rows] == ["PIL", "torchvision.io", "GPU path's workers (file read)"]
    for row in rows:
        assert row["decode_ms"] > 0 and row["total_ms"] > 0  # measured figures, never compared with each other
        assert row["cores_per_gpu"] == pytest.approx(1000.0 * row["total_ms"] / 1e3)
        assert row["images_per_core_s"] == pytest.approx(1e3 / row["total_ms"])
    assert "| PIL |" in markdown(rows, 1000.0, "3 JPEGs", 64)
    (tmp_path / "empty" / "class_0").mkdir(parents=True)
    with pytest.raises(UserError, match="no JPEG files under"):
        jpeg_paths(tmp_path / "empty", 3)
    # a truncated JPEG: one line naming the file, from either decoder, and exit status 2 from the command
    from pretrain.timers.data_time import main

    broken = tmp_path / "broken" / "class_0" / "bad.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(paths[0].read_bytes()[:400])
    with pytest.raises(UserError, match=f"corrupt image file {broken}"):
        time_paths([broken], rate=1.0, image_size=64)
    assert main(["--data", str(tmp_path / "broken"), "--images", "1"]) == 2
