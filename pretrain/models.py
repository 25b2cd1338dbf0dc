"""Backbones: timm models built without pretrained weights, returning pooled features."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm
import torch
from torch import nn

from pretrain.errors import UserError


@dataclass(frozen=True)
class ResNetLayout:
    """What the transfer stage and the benchmarks need to know about a ResNet: the one place it is written."""

    depth: int
    block: str  # "basic" (18/34) or "bottleneck" (50+)
    blocks_per_stage: tuple[int, int, int, int]

    @property
    def stage_channels(self) -> list[int]:
        """Output channels of the four stages (res2..res5 / layer1..layer4)."""
        widths = [64, 128, 256, 512]
        return [w * 4 for w in widths] if self.block == "bottleneck" else widths


# The architectures the transfer stage converts (Detectron2 / MMDetection ResNet layouts).
RESNETS = {
    "resnet18": ResNetLayout(18, "basic", (2, 2, 2, 2)),
    "resnet34": ResNetLayout(34, "basic", (3, 4, 6, 3)),
    "resnet50": ResNetLayout(50, "bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetLayout(101, "bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetLayout(152, "bottleneck", (3, 8, 36, 3)),
}
TRANSFERABLE_ARCHS = tuple(RESNETS)
RESNET_DEPTHS = {layout.depth: layout for layout in RESNETS.values()}


# `imagenet`: the model's own stem (a ResNet's 7x7 stride-2 conv and max-pool: what detection and
# segmentation fine-tune). `small`: a 3x3 stride-1 conv and no max-pool, as CIFAR recipes use for 32-64 px
# images (ours: padding 1, so a 32 px image stays 32 px into the first stage).
STEMS = ("imagenet", "small")


def build_backbone(arch: str, stem: str = "imagenet") -> tuple[nn.Module, int]:
    """A timm model without classifier (`num_classes=0`): images -> pooled features. Returns (model, dim)."""
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, list(TRANSFERABLE_ARCHS) + timm.list_models(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown arch '{arch}': not a timm model{hint}")
    if stem not in STEMS:
        raise UserError(f"unknown model.stem '{stem}'; known: {', '.join(STEMS)}")
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if stem == "small":
        if arch not in RESNETS:
            raise UserError(f"model.stem=small is defined for the ResNets ({', '.join(RESNETS)}), not {arch}")
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
    return model, model.num_features


def stem_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Which stem a ResNet state dict holds, from its first convolution's kernel."""
    kernel = tuple(state_dict["conv1.weight"].shape[-2:])
    return "small" if kernel == (3, 3) else "imagenet"


def conv_input_sizes(model: nn.Module, image_size: int) -> dict[str, tuple[int, int, int]]:
    """For each Conv2d of `model`: (input height, input width, stride) when a square `image_size` image
    goes through it. One image in eval mode without gradients: no weight, statistic or random draw changes."""
    sizes: dict[str, tuple[int, int, int]] = {}

    def record(name: str):
        def hook(module: nn.Conv2d, args: tuple) -> None:  # returns None: the input goes on unchanged
            sizes.setdefault(name, (*args[0].shape[-2:], max(module.stride)))
        return hook

    hooks = [module.register_forward_pre_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sizes


def strided_convs_on_one_pixel(model: nn.Module, image_size: int) -> list[str]:
    """The strided convolutions that see a 1x1 map at this image size: there torch's CPU bfloat16 kernels
    compute wrong, run-to-run different weight gradients on the taps that see only padding (torch 2.13)."""
    return [name for name, (h, w, stride) in conv_input_sizes(model, image_size).items()
            if stride > 1 and h == w == 1]
