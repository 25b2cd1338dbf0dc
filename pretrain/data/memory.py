"""Small images held on the training device: decoded once, cropped, flipped and normalised there per batch.

For datasets of small images (Fashion-MNIST, CIFAR: 28-32 px), a GPU trains a ResNet-18 faster than worker
processes can decode PNG files and run PIL augmentations. `data.in_memory: true` decodes the ImageFolder once
into one uint8 tensor on the device and augments each batch there, with no host sync:

- the same samples in the same order as the file path (the same `GlobalBatchSampler`), the same labels;
- the same augmentation *distributions* (RandomResizedCrop's area and aspect-ratio draws with its 10 tries
  and centre-crop fallback, a horizontal flip with probability 1/2, then (x / 255 - mean) / std), drawn for
  the whole batch at once from a generator seeded by (seed, rank, epoch, step): other random draws than the
  file path's, which takes them one image at a time from the process's global generator;
- the resampling of torchvision's tensor path (`resized_crop`, bilinear, antialias off: sample positions at
  pixel centres, clamped to the crop): for the same crop boxes the two agree to float rounding. PIL (the
  file path) rounds its result to 8 bits and, when it shrinks a crop, low-pass filters it first; where crops
  are enlarged (every crop of a 28 px Fashion-MNIST image to 32 px) the two differ by at most one grey level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from pretrain.data.folder import IndexedImageFolder
from pretrain.data.sampler import GlobalBatchSampler
from pretrain.errors import UserError

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range, as the file path uses
TRIES = 10  # RandomResizedCrop's tries before it falls back to the centre crop


def decode_all(dataset: IndexedImageFolder) -> torch.Tensor:
    """Every image of the folder as one uint8 tensor (N, 3, H, W); the images must share one size."""
    arrays, sizes = [], set()
    for index in range(len(dataset)):
        array = np.asarray(dataset.load(index))
        sizes.add(array.shape[:2])
        if len(sizes) > 1:
            raise UserError(f"data.in_memory needs images of one size; {dataset.root} has {sorted(sizes)} "
                            f"(first different: {dataset.samples[index][0]}); use the file path (in_memory: false)")
        arrays.append(array)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def crop_boxes(n: int, height: int | torch.Tensor, width: int | torch.Tensor, scale: tuple[float, float],
               generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """RandomResizedCrop's boxes for n images at once: (top, left, h, w) as an (n, 4) int64 tensor. `height` and
    `width` are one size for all, or each image's (n,); the draws are the same either way."""
    height = torch.as_tensor(height, device=device).expand(n)
    width = torch.as_tensor(width, device=device).expand(n)
    area = (height * width).float()[:, None]
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    target = torch.empty(n, TRIES, device=device).uniform_(scale[0], scale[1], generator=generator) * area
    aspect = torch.exp(torch.empty(n, TRIES, device=device).uniform_(*log_ratio, generator=generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (h > 0) & (w <= width[:, None]) & (h <= height[:, None])
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first try that fits, as the loop takes it
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    # the fallback: the whole image, clamped to the ratio range, in the centre
    in_ratio = width.double() / height.double()
    fallback_w = torch.where(in_ratio > RATIO[1], torch.round(height.double() * RATIO[1]), width.double())
    fallback_h = torch.where(in_ratio < RATIO[0], torch.round(width.double() / RATIO[0]), height.double())
    found = fits.any(dim=1)
    w = torch.where(found, w, fallback_w.float())
    h = torch.where(found, h, fallback_h.float())
    u = torch.rand(n, 2, device=device, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    top = torch.where(found, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], dim=1).long()


def _sample_positions(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Bilinear taps along one axis for each image: (lower index, upper index, weight of the upper)."""
    out = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    source = (out[None, :] * (length[:, None].float() / size) - 0.5).clamp(min=0)  # torch's half-pixel rule
    lower = source.floor()
    weight = source - lower
    lower = torch.minimum(lower.long(), (length - 1)[:, None])
    upper = torch.minimum(lower + 1, (length - 1)[:, None])
    return start[:, None] + lower, start[:, None] + upper, weight


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize it to size x size (bilinear, no antialias), as float 0..255."""
    n, channels, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    y0, y1, wy = _sample_positions(top, h, size)
    x0, x1, wx = _sample_positions(left, w, size)
    images = images.float()

    def rows(index: torch.Tensor) -> torch.Tensor:
        return images.gather(2, index[:, None, :, None].expand(n, channels, size, width))

    columns = rows(y0) * (1 - wy)[:, None, :, None] + rows(y1) * wy[:, None, :, None]

    def cols(index: torch.Tensor) -> torch.Tensor:
        return columns.gather(3, index[:, None, None, :].expand(n, channels, size, size))

    return cols(x0) * (1 - wx)[:, None, None, :] + cols(x1) * wx[:, None, None, :]


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """The seed of one step's augmentation draws on one process."""
    return ((seed * 1_000_003 + rank) * 10_007 + epoch) * 100_003 + step


class InMemoryImages:
    """The training set as one uint8 tensor on `device`, served as augmented global-batch slices."""

    def __init__(self, dataset: IndexedImageFolder, device: torch.device, image_size: int,
                 crop_scale: list[float], mean: list[float], std: list[float]):
        self.images = decode_all(dataset).to(device)
        self.targets = dataset.targets.to(device)
        self.device, self.image_size, self.crop_scale = device, image_size, (crop_scale[0], crop_scale[1])
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random part of n training views: crop boxes (n, 4) and horizontal flips (n,)."""
        boxes = crop_boxes(n, self.images.shape[2], self.images.shape[3], self.crop_scale, generator, self.device)
        flips = torch.rand(n, device=self.device, generator=generator) < 0.5
        return boxes, flips

    def render(self, indices: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """The normalised training views of these images for these draws: crop, resize, flip, normalise."""
        out = resized_crops(self.images[indices], boxes, self.image_size)
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
        return (out - self.mean) / self.std

    def batches(self, sampler: GlobalBatchSampler, seed: int, rank: int, epoch: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images, labels, indices) for the sampler's remaining steps of this epoch, on the device. Each step's
        draws are seeded by (seed, rank, epoch, step): a run resumed mid-epoch draws what it would have."""
        order = torch.tensor(list(sampler), dtype=torch.long).view(-1, sampler.local_batch).to(self.device)
        generator = torch.Generator(device=self.device)
        for offset, indices in enumerate(order):
            generator.manual_seed(step_seed(seed, rank, epoch, sampler.start_step + offset))
            yield self.render(indices, *self.draw(len(indices), generator)), self.targets[indices], indices
