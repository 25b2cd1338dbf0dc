"""A pretrained backbone frozen for its features: built as it was trained, fed as it was trained, pooled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from pretrain.distributed import usable_cores


def frozen_backbone(ckpt: Path, device: str) -> tuple[torch.nn.Module, Any]:
    """(the backbone in eval mode on `device`, its source record) from a checkpoint or a released name."""
    from transfer.source import read_backbone, reference_model

    source = read_backbone(ckpt)
    model = reference_model(source).to(device).eval()  # as trained (caffe-style strides included)
    return model, source


def input_steps(source: Any) -> list:
    """PIL image -> the tensor the backbone was trained on: its channel order, pixel range, mean and std."""
    steps = [transforms.ToTensor()]
    if source.input.get("channel_order", "RGB") == "BGR":
        steps.append(transforms.Lambda(lambda t: t.flip(0)))
    if list(source.input.get("pixel_range", [0, 1])) == [0, 255]:
        steps.append(transforms.Lambda(lambda t: t * 255))
    steps.append(transforms.Normalize(source.input["mean"], source.input["std"]))
    return steps


def pooled_features(model: torch.nn.Module, dataset: Dataset, device: str, batch_size: int = 64,
                    progress: str | None = None) -> torch.Tensor:
    """The pooled features of every image of `dataset` ((image, label, ...) items), in order, as float32 on the
    CPU. Real datasets are decoded by worker processes."""
    workers = 0 if len(dataset) < 5000 else min(8, usable_cores())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.startswith("cuda"))
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=progress, unit="batch", leave=False, disable=None)  # a bar on a terminal only
    feats = []
    with torch.no_grad():
        for batch in loader:
            feats.append(model(batch[0].to(device, non_blocking=True)).float().cpu())
    return torch.cat(feats)
