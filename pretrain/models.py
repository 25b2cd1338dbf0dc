"""Backbones: timm models built without pretrained weights, returning pooled features."""

from __future__ import annotations

import difflib

import timm
from torch import nn

from pretrain.errors import UserError

# The architectures the transfer stage converts (Detectron2 / MMDetection ResNet layouts).
TRANSFERABLE_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build_backbone(arch: str) -> tuple[nn.Module, int]:
    """A timm model without classifier (`num_classes=0`): images -> pooled features. Returns (model, dim)."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, list(TRANSFERABLE_ARCHS) + timm.list_models(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown arch '{arch}': not a timm model{hint}")
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    return model, model.num_features
