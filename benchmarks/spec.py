"""What one benchmark run is, as every framework module receives it, and what it hands back.

The protocol of a benchmark (its global batch, learning rate and length) belongs to its config and never
changes with the number of processes: each process gets `global batch / world size` images, and a world
size that does not divide the global batch is refused before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.errors import UserError


@dataclass(frozen=True)
class RunSpec:
    """One training run of one benchmark schedule, as seen from inside one of its processes."""

    schedule: str
    weights: Path  # the converted, verified checkpoint (or the source checkpoint for frozen-feature tasks)
    settings: dict[str, Any]  # the framework settings recorded with the conversion
    data_root: Path
    work_dir: Path  # the framework's own output folder (logs, checkpoints, predictions)
    seed: int
    device: str = "cpu"  # "cuda" or "cpu"
    world_size: int = 1
    opts: tuple[str, ...] = ()  # KEY=VALUE overrides, applied by the framework's own mechanism
    max_iters: int | None = None  # dry runs: stop after this many iterations, no evaluation


@dataclass
class TrainResult:
    resolved: str  # the framework's resolved config, as text
    metrics: dict[str, dict[str, float]]
    protocol: dict[str, Any] = field(default_factory=dict)  # world size, batches, lr, length


def per_process_batch(global_batch: int, world_size: int, what: str) -> int:
    if global_batch % world_size:
        divisors = [n for n in range(1, global_batch + 1) if global_batch % n == 0]
        raise UserError(f"{what}: the protocol's global batch of {global_batch} images cannot be split over "
                        f"{world_size} processes; use {', '.join(map(str, divisors))} processes")
    return global_batch // world_size


def split_opts(opts: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """`KEY=VALUE` strings -> (key, value text) pairs, each checked for its `=`."""
    pairs = []
    for text in opts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--opts: '{text}' is not of the form KEY=VALUE")
        pairs.append((key.strip(), value))
    return pairs
