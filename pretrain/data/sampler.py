"""Epoch-seeded shuffling, split so that DDP ranks together see exactly one global batch per step.

Rank r takes the r-th contiguous slice of every global batch, so a run on N processes feeds the
model the same samples per step as a single process with the same global batch. An epoch can start
at any step, which is what resuming from a mid-epoch checkpoint needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[int]):
    def __init__(self, num_samples: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.seed = seed
        self.steps_per_epoch = num_samples // global_batch  # the last partial batch is dropped
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.local_batch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        order = order[: self.steps_per_epoch * self.global_batch].view(self.steps_per_epoch, self.global_batch)
        mine = order[self.start_step :, self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        return iter(mine.reshape(-1).tolist())
