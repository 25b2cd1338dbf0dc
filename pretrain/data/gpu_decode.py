"""JPEGs decoded and augmented on the training GPU (`data.decoder: gpu`): loader workers only read the files.

A ResNet-50 step on one H200 trains 4,663 images/s; decoding and augmenting ImageNet's JPEGs with PIL costs
about 2.3 ms of CPU each (`make bench-data-speed`), some 11 cores per GPU. Here the workers hand over each
file's bytes, and per step the GPU decodes them (torchvision's `decode_jpeg` on a CUDA device: nvjpeg, which
torchvision's wheel already carries), crops, resizes, flips and normalises. Against the file path:

- the same samples in the same order (the same `GlobalBatchSampler`), the same labels, so a run resumes at any
  step as it does now;
- the same augmentation *distributions* (RandomResizedCrop's area and aspect-ratio draws with its 10 tries and
  centre-crop fallback, each image at its own size; a horizontal flip with probability 1/2; then
  (x / 255 - mean) / std), drawn for the whole step at once on the CPU from a generator seeded by
  (seed, rank, epoch, step): the same boxes on any device, other draws than the file path's per-image ones;
- the resampling of torchvision's tensor path: bilinear with antialias (a shrunk crop is low-pass filtered
  first, as PIL does), in float without PIL's rounding to 8 bits;
- decoded pixels: on the CPU, libjpeg-turbo as PIL uses it (equal pixels); nvjpeg's IDCT and chroma upsampling
  differ from libjpeg's by a few grey levels (measured by `make gpu-check` where a GPU is lent).

Files that are not JPEGs (ImageNet's training set holds one PNG and some CMYK JPEGs), and any file nvjpeg
refuses, are decoded on the CPU by torchvision and moved to the GPU; a file neither decoder reads stops the run
with one error naming it, never a black image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from pretrain.data.folder import IndexedImageFolder
from pretrain.data.memory import crop_boxes, step_seed
from pretrain.data.sampler import GlobalBatchSampler
from pretrain.errors import CorruptImageError

JPEG_MAGIC = b"\xff\xd8\xff"


class FileBytes(Dataset):
    """(the file's bytes as a uint8 tensor, label, index) per sample of an ImageFolder: all a worker does."""

    def __init__(self, dataset: IndexedImageFolder):
        self.samples = dataset.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label = self.samples[index]
        return self.read(path), label, index

    @staticmethod
    def read(path: str | Path) -> torch.Tensor:
        try:
            with open(path, "rb") as f:
                return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        except OSError as e:
            raise CorruptImageError(f"cannot read image file {path}: {e}") from None


def keep_bytes_apart(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                         torch.Tensor]:
    """The loader's collate: files of different lengths stay a list."""
    data, labels, indices = zip(*batch, strict=True)
    return list(data), torch.tensor(labels), torch.tensor(indices)


def gpu_decoder_missing(device: torch.device) -> str | None:
    """Why the GPU path cannot run on `device` (None when it can)."""
    if device.type != "cuda":
        return f"data.decoder=gpu decodes on a CUDA device; this run trains on {device.type}"
    return None


class GpuDecodedImages:
    """An ImageFolder's JPEGs read by loader workers, decoded and augmented on `device` a step at a time.

    `device` is the training GPU; on the CPU (tests, a timing) the same code decodes with libjpeg-turbo."""

    def __init__(self, dataset: IndexedImageFolder, device: torch.device, image_size: int, crop_scale: list[float],
                 mean: list[float], std: list[float], workers: int):
        self.dataset, self.device, self.workers = dataset, device, workers
        self.image_size, self.crop_scale = image_size, (crop_scale[0], crop_scale[1])
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def decode(self, data: list[torch.Tensor], indices: list[int]) -> list[torch.Tensor]:
        """Each file as a uint8 RGB tensor (3, H, W) on the device: JPEGs in one batched call, others on the CPU."""
        images: list[torch.Tensor | None] = [None] * len(data)
        jpegs = [i for i, d in enumerate(data) if bytes(d[:3].tolist()) == JPEG_MAGIC]
        try:
            if jpegs:  # a batch of PNGs has none (decode_jpeg refuses an empty list)
                for i, image in zip(jpegs, decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB,
                                                       device=self.device), strict=True):
                    images[i] = image
        except RuntimeError:  # one file spoils the batched call: decode one by one to find it
            for i in jpegs:
                images[i] = self._one(data[i], indices[i], on_device=True)
        return [image if image is not None else self._one(d, index, on_device=False)
                for image, d, index in zip(images, data, indices, strict=True)]

    def _one(self, data: torch.Tensor, index: int, on_device: bool) -> torch.Tensor:
        if on_device:
            try:
                return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:
                pass  # what nvjpeg refuses, libjpeg-turbo may read (CMYK)
        try:
            return decode_image(data, mode=ImageReadMode.RGB).to(self.device, non_blocking=True)
        except RuntimeError as e:
            raise CorruptImageError(f"corrupt image file {self.dataset.samples[index][0]}: {e}") from None

    def draw(self, heights: list[int], widths: list[int], generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The random part of a step's views, on the CPU: crop boxes (n, 4) for these image sizes, flips (n,)."""
        cpu = torch.device("cpu")
        boxes = crop_boxes(len(heights), torch.tensor(heights), torch.tensor(widths), self.crop_scale, generator, cpu)
        flips = torch.rand(len(heights), generator=generator) < 0.5
        return boxes, flips

    def render(self, images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """The normalised views: each image cropped to its box and resized (bilinear, antialias), flipped."""
        size = self.image_size
        out = torch.empty(len(images), 3, size, size, device=self.device)
        for i, (image, (top, left, h, w)) in enumerate(zip(images, boxes.tolist(), strict=True)):
            crop = image[None, :, top:top + h, left:left + w].float()
            out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        out = torch.where(flips.to(self.device)[:, None, None, None], out.flip(-1), out)
        return (out - self.mean) / self.std

    def loader(self, sampler: GlobalBatchSampler) -> DataLoader:
        return DataLoader(FileBytes(self.dataset), batch_size=sampler.local_batch, sampler=sampler, drop_last=True,
                          num_workers=self.workers, collate_fn=keep_bytes_apart)

    def batches(self, sampler: GlobalBatchSampler, seed: int, rank: int, epoch: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images, labels, indices) on the device for the sampler's remaining steps of this epoch. Each step's
        draws are seeded by (seed, rank, epoch, step): a run resumed mid-epoch draws what it would have."""
        generator = torch.Generator()
        files = iter(self.loader(sampler))
        try:
            for offset, (data, labels, indices) in enumerate(files):
                images = self.decode(data, indices.tolist())
                generator.manual_seed(step_seed(seed, rank, epoch, sampler.start_step + offset))
                boxes, flips = self.draw([image.shape[1] for image in images],
                                         [image.shape[2] for image in images], generator)
                yield (self.render(images, boxes, flips), labels.to(self.device, non_blocking=True),
                       indices.to(self.device, non_blocking=True))
        finally:  # workers stopped when the epoch ends, however it ends (see the trainer's loader)
            stop = getattr(files, "_shutdown_workers", None)
            if stop is not None:
                stop()
