"""Several CPU processes (gloo) running the GPU protocol: what CUDA-only pieces are replaced by.

torch's SyncBatchNorm refuses CPU tensors once a process group exists, and DistributedDataParallel
refuses `device_ids` for a CPU module. The protocols use SyncBN everywhere, so a CPU run in N processes
swaps each SyncBatchNorm for `CpuSyncBatchNorm` (the same statistics over all processes, computed with
a differentiable all-reduce) and wraps the model without device ids. GPU runs never come here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the batch of every process, like nn.SyncBatchNorm, for CPU tensors (gloo)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        channels = input.shape[1]
        dims = [d for d in range(input.dim()) if d != 1]
        count = torch.tensor([input.numel() // max(channels, 1)], dtype=input.dtype)
        # one all-reduce of [sum, sum of squares, count]; a process with an empty batch adds zeros
        totals = dist_fn.all_reduce(torch.cat([input.sum(dims), input.pow(2).sum(dims), count]))
        n = totals[-1].clamp_min(1)
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean.pow(2)).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = [1, channels] + [1] * (input.dim() - 2)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def convert_sync_batchnorm_for_cpu(module: nn.Module) -> nn.Module:
    """Every nn.SyncBatchNorm in `module` becomes a CpuSyncBatchNorm holding the same tensors."""
    if isinstance(module, nn.SyncBatchNorm):
        replacement = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                       module.track_running_stats)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        for parameter, original in zip(replacement.parameters(), module.parameters(), strict=True):
            parameter.requires_grad_(original.requires_grad)
        return replacement
    for name, child in module.named_children():
        converted = convert_sync_batchnorm_for_cpu(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def needs_cpu_replacements(device: str) -> bool:
    return device == "cpu" and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
