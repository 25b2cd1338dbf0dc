"""Read a pretrained ResNet from any of the checkpoint flavours users bring, as a clean timm state dict.

Flavours: this suite's exported backbone, its training checkpoints, a plain timm / torchvision
ResNet state dict (bare or under `state_dict` / `model`), and MoCo-style checkpoints
(`module.encoder_q.` prefix). Wrappers are stripped, heads (classifier, projector, LOOK head and
memory, MoCo's key encoder and queue) are dropped and reported, and what remains must be exactly
the tensors of a ResNet the converters know, with the right shapes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrain.checkpoint import BACKBONE_FORMAT, CHECKPOINT_FORMAT, load_weights
from pretrain.config import IMAGENET_MEAN, IMAGENET_STD
from pretrain.errors import UserError
from pretrain.models import RESNETS, build_backbone, stem_of
from transfer.caffe2 import CAFFE_INPUT, is_caffe2_pickle, read_blobs
from transfer.caffe2 import timm_state as caffe2_state

# (block type, blocks per stage) -> timm / torchvision architecture name
RESNET_LAYOUTS = {(layout.block, layout.blocks_per_stage): arch for arch, layout in RESNETS.items()}

# Top-level modules of a checkpoint that are heads, not backbone: classifiers, and SwAV's projection head and
# prototypes (its released file is the whole model under `module.`).
HEADS = ("fc", "head", "classifier", "projection_head", "prototypes")

# The input convention of torchvision / timm ImageNet models, assumed for files that do not record one.
TORCHVISION_INPUT = {"channel_order": "RGB", "pixel_range": [0, 1], "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


@dataclass
class SourceBackbone:
    """A ResNet backbone in timm / torchvision key layout, with where it came from."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    flavour: str
    input: dict[str, Any]
    input_recorded: bool  # False: the file did not say; the torchvision convention is assumed
    dropped: list[str] = field(default_factory=list)  # top-level names of what was dropped
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # caffe style: a downsampling bottleneck strides in its first 1x1 convolution, not in the 3x3
    stride_in_1x1: bool = False
    stem: str = "imagenet"  # or "small" (3x3 stride 1, no max-pool): a probe-only backbone

    @property
    def depth(self) -> int:
        return RESNETS[self.arch].depth

    @property
    def bottleneck(self) -> bool:
        return RESNETS[self.arch].block == "bottleneck"

    def pixel_stats_255(self) -> tuple[list[float], list[float]]:
        """Mean and std on the 0..255 pixel scale that Detectron2 and OpenMMLab configs use."""
        scale = 255.0 / self.input["pixel_range"][1]
        return ([round(m * scale, 4) for m in self.input["mean"]], [round(s * scale, 4) for s in self.input["std"]])


def _strip(
    state: dict[str, torch.Tensor], prefix: str, name_parts: int = 1
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors under `prefix` (prefix removed), and the names (first `name_parts` parts) of the rest."""
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    other = sorted({".".join(k.split(".")[:name_parts]) for k in state if not k.startswith(prefix)})
    return kept, other


def _unwrap(obj: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any], list[str]]:
    """(state dict of the backbone and maybe a classifier, flavour, meta, dropped) for each flavour."""
    meta = obj.get("meta")
    if isinstance(meta, dict) and meta.get("format") == BACKBONE_FORMAT:
        return obj["state_dict"], "transfer-bench backbone", meta, list(meta.get("dropped_heads", []))
    if obj.get("format") == CHECKPOINT_FORMAT:
        state, dropped = _strip(obj["model"], "backbone.")
        dropped = ["memory" if d == "_extra_state" else d for d in dropped]
        config = obj.get("config", {})
        meta = {"method": config.get("method", {}).get("name"), "arch": config.get("model", {}).get("arch"),
                "stem": config.get("model", {}).get("stem", "imagenet"),
                "input": {"channel_order": "RGB", "pixel_range": [0, 1], **{
                    k: config["data"][k] for k in ("mean", "std") if k in config.get("data", {})}},
                "epochs_done": obj.get("epoch"), "config": config}
        return state, "transfer-bench training checkpoint", meta, dropped
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), dict) and all(isinstance(v, torch.Tensor) for v in obj[wrapper].values()):
            obj = obj[wrapper]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: no state dict of tensors found (keys: {', '.join(list(obj)[:8])})")
    if any(k.startswith("module.encoder_q.") for k in obj):
        state, dropped = _strip(obj, "module.encoder_q.", name_parts=2)
        return state, "MoCo", {}, dropped
    if any(k.startswith("backbone.") for k in obj) and not all(k.startswith("backbone.") for k in obj):
        # an OpenMMLab algorithm checkpoint (MMSelfSup): the backbone, then neck, heads, momentum encoder, queue
        state, dropped = _strip(obj, "backbone.")
        return state, "OpenMMLab algorithm (MMSelfSup)", {}, dropped
    for prefix in ("module.", "backbone."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj, "timm/torchvision state dict", {}, []


def expected_state(arch: str, stem: str = "imagenet") -> dict[str, torch.Size]:
    """Every tensor of the timm ResNet backbone (no classifier), with its shape."""
    model, _ = build_backbone(arch, stem)
    return {k: v.shape for k, v in model.state_dict().items()}


def detect_arch(keys: list[str], path: Path) -> str:
    blocks = Counter()
    for key in keys:
        found = re.match(r"layer([1-4])\.(\d+)\.", key)
        if found:
            blocks[int(found.group(1))] = max(blocks[int(found.group(1))], int(found.group(2)) + 1)
    if not blocks or "conv1.weight" not in keys:
        shown = ", ".join(sorted(keys)[:6])
        raise UserError(f"{path} does not hold a ResNet the converter knows (no conv1 / layer1..4 keys; found {shown})")
    block = "bottleneck" if any(re.match(r"layer1\.0\.conv3\.", k) for k in keys) else "basic"
    layout = (block, tuple(blocks.get(i, 0) for i in (1, 2, 3, 4)))
    if layout not in RESNET_LAYOUTS:
        known = ", ".join(f"{name} ({b}, {list(n)})" for (b, n), name in RESNET_LAYOUTS.items())
        raise UserError(f"{path}: unknown ResNet architecture ({layout[0]} blocks {list(layout[1])}); known: {known}")
    return RESNET_LAYOUTS[layout]


def read_backbone(path: str | Path) -> SourceBackbone:
    """Load and validate a ResNet backbone from any supported flavour; every problem is one UserError."""
    path = Path(path)
    if is_caffe2_pickle(path):
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        state, dropped = caffe2_state(read_blobs(path), path)
        flavour, meta = "caffe2 ImageNet weights (Detectron2 ImageNetPretrained)", {"input": CAFFE_INPUT,
                                                                                  "style": "caffe"}
    elif path.suffix == ".safetensors":  # timm's hub weights: a flat state dict in a format without pickles
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        try:
            state, flavour, meta, dropped = _unwrap(load_file(str(path)), path)
        except SafetensorError as e:
            raise UserError(f"cannot read checkpoint {path}: {e}") from None
    else:
        state, flavour, meta, dropped = _unwrap(load_weights(path), path)
    heads = sorted({k.split(".")[0] for k in state if k.split(".")[0] in HEADS})
    state = {k: v for k, v in state.items() if k.split(".")[0] not in heads}
    dropped = sorted(set(dropped) | set(heads))

    arch = detect_arch(list(state), path)
    if meta.get("arch") and meta["arch"] != arch:
        raise UserError(f"{path}: metadata says arch {meta['arch']} but the tensors are a {arch}")
    stem = stem_of(state)
    if meta.get("stem", stem) != stem:
        raise UserError(f"{path}: metadata says stem {meta['stem']} but conv1 is a {stem}-stem convolution")
    expected = expected_state(arch, stem)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s): {', '.join(extra[:8])}")
    if wrong:
        problems.append("wrong shape: " + ", ".join(
            f"{k} {tuple(state[k].shape)} (a {arch} has {tuple(expected[k])})" for k in wrong[:8]))
    if problems:
        raise UserError(f"{path} is not a complete {arch} backbone: " + "; ".join(problems))

    recorded = "input" in meta and {"mean", "std"} <= set(meta["input"])
    source_input = {**TORCHVISION_INPUT, **meta["input"]} if recorded else dict(TORCHVISION_INPUT)
    caffe = meta.get("style") == "caffe"
    if caffe and not RESNETS[arch].block == "bottleneck":
        raise UserError(f"{path}: a caffe-style {arch}: only bottleneck ResNets have the 1x1 convolution to stride in")
    return SourceBackbone(state_dict={k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          arch=arch, flavour=flavour, input=source_input, input_recorded=recorded,
                          dropped=dropped, meta=meta, path=path, stride_in_1x1=caffe, stem=stem)


def reference_model(source: SourceBackbone) -> torch.nn.Module:
    """The source backbone as the timm model it is, weights loaded strictly, in eval mode; for a caffe-style
    source, each downsampling bottleneck strides in its 1x1 convolution instead of its 3x3."""
    model, _ = build_backbone(source.arch, source.stem)
    model.load_state_dict(source.state_dict, strict=True)
    if source.stride_in_1x1:
        for stage in (model.layer2, model.layer3, model.layer4):
            first = stage[0]
            first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
    return model.eval()


def reference_stage_features(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the four residual stages (strides 4, 8, 16, 32)."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
    features = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        features.append(x)
    return features


def imagenet_convention_backbone(arch: str = "resnet50") -> SourceBackbone:
    """A backbone without weights in the torchvision ImageNet input convention (RGB, ImageNet mean / std,
    stride in the 3x3 conv): what the protocol comparisons resolve a framework config for."""
    return SourceBackbone(state_dict={}, arch=arch, flavour="convention only", input=dict(TORCHVISION_INPUT),
                          input_recorded=True)
