"""Precise BatchNorm statistics with the estimator the published Detectron2 protocols ran, the same on every rank.

Precise BN (Wu & Johnson, "Rethinking Batch in BatchNorm") replaces each BN layer's running averages by
statistics of a number of training batches computed with the trained weights. The protocols here
reproduce results of 2019-2020 (MoCo's), which ran fvcore's estimator of that time (facebookresearch/fvcore
up to d3b3b12, 2021-05-17; e.g. at 96ee7f1, 2020-03-31): with momentum 1 each forward leaves the batch's
statistics in the layer's buffers, and the estimate is their equal-weight mean over the batches, the mean
of the batch means and the mean of the batch variances as the layer stores them (Bessel-corrected for
`nn.BatchNorm2d`, biased for Detectron2's `NaiveSyncBatchNorm`). Later fvcore weights each batch by its
element count and undoes the Bessel correction (a population estimator): another number wherever batch
sizes differ, which is why it is not used here.

fvcore runs on each rank alone. With plain BN the ranks then keep different buffers (each evaluates its
shard of the test set with its own statistics: detectron2 issues 5398 and 5409, fvcore issue 152). Here
every rank accumulates the same equal-weight sums and one all-reduce averages them over the ranks: with
synchronised layers (SyncBN, naiveSyncBN: every real protocol here) each rank's estimate is already the
same and stays what fvcore gives on one rank; with plain BN every batch of every rank weighs the same.
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


ESTIMATOR = "equal-weight mean of the per-batch means and variances (fvcore up to d3b3b12, e.g. 96ee7f1)"


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[Any], num_iters: int,
                    forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Set every training-mode BN layer's running mean and variance to the equal-weight mean of its statistics
    over `num_iters` batches from `batches`, averaged over all ranks of the default process group (if any).
    Returns the number of BN layers updated. Every rank must call it (it ends with one all-reduce)."""
    layers = bn_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    used: set[nn.Module] = set()

    def record_use(module: nn.Module, args: tuple) -> None:
        if module in used:
            raise ValueError("a BN layer ran twice in one forward: precise BN needs one batch per layer and step")
        used.add(module)

    hooks = [bn.register_forward_pre_hook(record_use) for bn in layers]
    # per layer: [batches that used it, sum of batch means (C), sum of batch variances (C)], in float64
    sums = [torch.zeros(1 + 2 * bn.num_features, dtype=torch.float64, device=bn.running_mean.device)
            for bn in layers]
    try:
        for bn in layers:
            bn.momentum = 1.0  # after a forward the running buffers hold that batch's statistics
        seen = 0
        for batch in itertools.islice(batches, num_iters):
            used.clear()
            (forward or _call)(model, batch)
            seen += 1
            for bn, total in zip(layers, sums, strict=True):
                if bn not in used:
                    continue  # the layer was not used by this batch
                channels = bn.num_features
                total[0] += 1
                total[1:1 + channels] += bn.running_mean.double()
                total[1 + channels:] += bn.running_var.double()
        if seen != num_iters:
            raise ValueError(f"precise BN needs {num_iters} batches; the data ended after {seen}")
        flat = torch.cat(sums)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flat)  # the same sums, hence the same buffers, on every rank
        offset = 0
        for bn in layers:
            channels = bn.num_features
            batches_seen = flat[offset]
            if batches_seen > 0:
                bn.running_mean.copy_((flat[offset + 1:offset + 1 + channels] / batches_seen).to(bn.running_mean.dtype))
                bn.running_var.copy_((flat[offset + 1 + channels:offset + 1 + 2 * channels] / batches_seen)
                                     .to(bn.running_var.dtype))
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
