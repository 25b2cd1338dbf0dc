"""SL: backbone -> global pool -> linear classifier, cross-entropy."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import Method, register_method


@register_method("sl")
class SupervisedLinear(Method):
    """Backbone -> linear classifier, cross-entropy."""

    @dataclasses.dataclass
    class Params:
        label_smoothing: float = 0.0

    def __init__(self, backbone: nn.Module, feature_dim: int, targets: torch.Tensor, params: Params):
        super().__init__(backbone, feature_dim, targets, params)
        self.head = nn.Linear(feature_dim, self.num_classes)

    def loss(self, outputs, labels, indices):
        loss = F.cross_entropy(outputs.float(), labels, label_smoothing=self.params.label_smoothing)
        top1 = (outputs.argmax(1) == labels).float().mean()
        # the largest |logit| of the batch: how sharp the softmax has become (its growth precedes a blow-up)
        return loss, {"top1": top1, "logit_max": outputs.detach().abs().max().float()}
