"""SL-MLP (Wang et al., CVPR 2022): an MLP projector between backbone and classifier.

The projector (Linear-BN-ReLU-Linear) exists only during pretraining; like the classifier it is
dropped when the backbone is exported.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pretrain.methods.base import mlp, register_method
from pretrain.methods.sl import SupervisedLinear


@register_method("sl-mlp")
class SupervisedMLP(SupervisedLinear):
    """Backbone -> MLP projector -> linear classifier; projector dropped after."""

    @dataclasses.dataclass
    class Params:
        hidden_dim: int = 2048
        out_dim: int = 256
        label_smoothing: float = 0.0

    def __init__(self, backbone: nn.Module, feature_dim: int, targets: torch.Tensor, params: Params):
        super().__init__(backbone, feature_dim, targets, params)
        self.head = nn.Sequential(
            mlp(feature_dim, params.hidden_dim, params.out_dim),
            nn.Linear(params.out_dim, self.num_classes),
        )
