"""The interface every pretraining method implements, and the registry."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def decorator(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method '{name}' registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear: the SL-MLP projector and the LOOK embedding head."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class Method(nn.Module):
    """A backbone plus the method's training-only head.

    `forward` is what DDP wraps (backbone and head, the trainable part); `loss` runs outside the DDP
    wrapper on its output, so state such as the LOOK memory never becomes a DDP-broadcast buffer.
    After pretraining only `backbone` is exported; every head is dropped.
    """

    name: ClassVar[str]

    @dataclasses.dataclass
    class Params:
        pass

    def __init__(self, backbone: nn.Module, feature_dim: int, targets: torch.Tensor, params: Any):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = int(targets.max()) + 1
        self.params = params

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def loss(
        self, outputs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss for the local batch (averaged over it) and extra per-step metrics."""
        raise NotImplementedError

    def to_device(self, device: torch.device) -> None:
        """Move non-module state (the LOOK memory) to the training device."""

    def check_consistent_across_ranks(self) -> None:
        """Raise if replicated non-module state differs between DDP ranks."""
