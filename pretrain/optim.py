"""Optimizers (SGD, LARS, AdamW) and the per-step learning-rate schedule (linear warmup + cosine)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrain.config import OptimConfig, ScheduleConfig
from pretrain.errors import UserError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al., 2017).

    Parameter groups with `lars_exclude=True` (BN, biases) get plain SGD with momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    if not config.no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer at `lr` (the peak learning rate; the schedule sets each step's value)."""
    groups = parameter_groups(model, config)
    if config.name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    if config.name == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    raise UserError(f"unknown optimizer '{config.name}'; known: sgd, lars, adamw")


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step`: linear warmup from ~0 over `warmup` steps, then cosine down to
    `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps(schedule: ScheduleConfig, steps_per_epoch: int) -> int:
    return round(schedule.warmup_epochs * steps_per_epoch)


def set_lr(optimizer: torch.optim.Optimizer, peak_lr: float, step: int, total_steps: int,
           steps_per_epoch: int, schedule: ScheduleConfig) -> float:
    lr = peak_lr * lr_factor(step, total_steps, warmup_steps(schedule, steps_per_epoch), schedule.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
