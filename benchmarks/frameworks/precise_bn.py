"""Precise BatchNorm statistics that are the same on every rank.

Precise BN (Wu & Johnson, "Rethinking Batch in BatchNorm") replaces each BN layer's running averages by
the population statistics of a number of training batches, computed with the trained weights. fvcore's
`update_bn_stats` (what Detectron2's PreciseBN hook calls) does this on each rank alone, weighting every
batch by its size *on that rank* (N x H x W elements) without synchronising it. Under multi-scale input
the image sizes differ between ranks, and in a C4 RoI head the batch is the rank's RoI count, so the
ranks end with different buffers (detectron2 issues 5398 and 5409, fvcore issue 152): each rank then
evaluates its shard of the test set with its own statistics, and the result depends on the GPU count.

Here every rank accumulates fvcore's population estimator (the batch means and Bessel-undone second
moments, weighted by the element count of each batch) and one all-reduce sums the accumulators over the
ranks, so every rank ends with the same buffers: the estimator over the batches of all ranks together.
In one process the result is fvcore's. Synchronised layers (SyncBN, naiveSyncBN) already see the global
batch; their per-rank statistics agree and are combined the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers in training mode with running statistics (any subclass: SyncBatchNorm, Detectron2's
    NaiveSyncBatchNorm, our CpuSyncBatchNorm; FrozenBN has no training statistics and is not one)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[Any], num_iters: int,
                    forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Set every training-mode BN layer's running mean and variance to the population statistics of
    `num_iters` batches from `batches`, combined over all ranks of the default process group (if any).
    Returns the number of BN layers updated. Every rank must call it (it ends with one all-reduce)."""
    layers = bn_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    counts: dict[nn.Module, int] = {}

    def record_count(module: nn.Module, args: tuple) -> None:
        if module in counts:
            raise ValueError("a BN layer ran twice in one forward: precise BN needs one batch per layer and step")
        counts[module] = args[0].numel() // args[0].shape[1]  # N x H x W, as fvcore counts

    hooks = [bn.register_forward_pre_hook(record_count) for bn in layers]
    # per layer: [sum of n, sum of n * mean (C), sum of n * (mean^2 + biased var) (C)], in float64
    sums = [torch.zeros(1 + 2 * bn.num_features, dtype=torch.float64, device=bn.running_mean.device)
            for bn in layers]
    try:
        for bn in layers:
            bn.momentum = 1.0  # after a forward the running buffers hold that batch's statistics
        seen = 0
        for batch in itertools.islice(batches, num_iters):
            counts.clear()
            (forward or _call)(model, batch)
            seen += 1
            for bn, total in zip(layers, sums, strict=True):
                n = counts.get(bn)
                if not n:
                    continue  # the layer was not used by this batch
                mean, var = bn.running_mean.double(), bn.running_var.double()  # var is Bessel-corrected
                channels = bn.num_features
                total[0] += n
                total[1:1 + channels] += n * mean
                total[1 + channels:] += n * (mean.square() + var * (n - 1) / n)
        if seen != num_iters:
            raise ValueError(f"precise BN needs {num_iters} batches; the data ended after {seen}")
        flat = torch.cat(sums)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flat)  # the same sums, hence the same buffers, on every rank
        offset = 0
        for bn in layers:
            channels = bn.num_features
            n = flat[offset]
            if n > 0:
                mean = flat[offset + 1:offset + 1 + channels] / n
                square = flat[offset + 1 + channels:offset + 1 + 2 * channels] / n
                bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
                bn.running_var.copy_((square - mean.square()).clamp_min(0).to(bn.running_var.dtype))
            offset += 1 + 2 * channels
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
        for hook in hooks:
            hook.remove()
    return len(layers)


def _call(model: nn.Module, batch: Any) -> Any:
    return model(batch)


def buffer_digest(model: nn.Module) -> str:
    """A short hash of every BN layer's running statistics: equal on two ranks iff their buffers are."""
    import hashlib

    digest = hashlib.sha256()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            digest.update(name.encode())
            for buffer in (module.running_mean, module.running_var):
                digest.update(buffer.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
