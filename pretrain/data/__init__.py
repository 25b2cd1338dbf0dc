"""Training data: ImageNet-layout folders, or the embedded generated dataset written in that layout."""

from __future__ import annotations

from pathlib import Path

from torchvision import transforms

from pretrain.config import DataConfig
from pretrain.data.folder import IndexedImageFolder, read_coarse_map
from pretrain.data.generated import generate
from pretrain.data.sampler import GlobalBatchSampler

__all__ = ["IndexedImageFolder", "read_coarse_map", "GlobalBatchSampler", "build_train_dataset", "train_root",
           "train_transform", "center_crop", "eval_transform"]


def train_transform(config: DataConfig) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(config.image_size, scale=tuple(config.crop_scale)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(config.mean, config.std),
    ])


def center_crop(size: int) -> list:
    """Resize and crop the centre to `size` px (ImageNet's 256 -> 224 ratio at 224 px and above)."""
    return [transforms.Resize(size if size < 224 else int(size * 256 / 224)), transforms.CenterCrop(size)]


def eval_transform(config: DataConfig) -> transforms.Compose:
    """The centre crop at the training size (the kNN monitor's view of an image)."""
    return transforms.Compose([*center_crop(config.image_size), transforms.ToTensor(),
                               transforms.Normalize(config.mean, config.std)])


def train_root(config: DataConfig) -> Path:
    """The folder to train on: `data.root`, or the generated dataset's `train/` (written if missing)."""
    if config.root is not None:
        return Path(config.root)
    return generate(config.generated, config.generated_dir) / "train"


def build_train_dataset(config: DataConfig) -> IndexedImageFolder:
    coarse = read_coarse_map(config.coarse_map) if config.coarse_map else None
    return IndexedImageFolder(train_root(config), transform=train_transform(config), coarse_map=coarse)


def dataset_name(config: DataConfig) -> str:
    if config.root is None:
        return "generated"
    root = Path(config.root).resolve()
    return f"{root.parent.name}-{root.name}" if root.name in ("train", "training") else root.name
