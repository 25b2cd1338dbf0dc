"""Detectron2 target: a `.pkl` in the form its checkpointer takes for third-party backbones.

`{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}` with the key names of
Detectron2's ResNet (`stem`, `res2..res5`, `convK.norm`, `shortcut`). The matching heuristics let the
same file load into a bare backbone or a whole GeneralizedRCNN (`backbone.bottom_up.*`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretrain.errors import UserError
from pretrain.models import RESNETS
from transfer.source import SourceBackbone
from transfer.verify import compare_features, random_images, require_loaded, source_features

NAME = "detectron2"
SUFFIX = ".detectron2.pkl"
_BN = r"(weight|bias|running_mean|running_var)"

# timm / torchvision name -> Detectron2 name; None: not a weight (BN's batch counter), left out on purpose.
KEY_MAP: list[tuple[str, Callable[[re.Match], str] | None]] = [
    (r"conv1\.weight", lambda m: "stem.conv1.weight"),
    (rf"bn1\.{_BN}", lambda m: f"stem.conv1.norm.{m[1]}"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (rf"layer(\d)\.(\d+)\.bn(\d)\.{_BN}", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (rf"layer(\d)\.(\d+)\.downsample\.1\.{_BN}", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
    (r"(.*\.)?num_batches_tracked", None),
]


def target_key(key: str) -> str | None:
    for pattern, rename in KEY_MAP:
        match = re.fullmatch(pattern, key)
        if match:
            return rename(match) if rename else None
    raise UserError(f"{NAME}: no key-map rule for source tensor '{key}'")


def convert(source: SourceBackbone) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in source.state_dict.items():
        name = target_key(key)
        if name is not None:
            converted[name] = value
    return converted


def apply_settings(cfg: Any, values: dict[str, Any]) -> Any:
    """Set `values` (from `settings`, or an export's sidecar JSON) on a Detectron2 CfgNode.

    Through detectron2's own override mechanism, so that an unknown key or a value of the wrong type
    fails exactly as it does for any detectron2 user.
    """
    cfg.merge_from_list([item for key, value in values.items() for item in (key, value)])
    return cfg


class Detectron2Target:
    name = NAME
    suffix = SUFFIX

    def settings(self, source: SourceBackbone) -> dict[str, Any]:
        """The Detectron2 config values this backbone needs, derived from its recorded input convention."""
        mean, std = source.pixel_stats_255()
        return {
            "INPUT.FORMAT": source.input["channel_order"],
            "MODEL.PIXEL_MEAN": mean,
            "MODEL.PIXEL_STD": std,
            "MODEL.RESNETS.DEPTH": source.depth,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": RESNETS[source.arch].stage_channels[0],
            # torchvision / timm put the stride in the 3x3 conv; caffe-style weights (MSRA's) in the 1x1
            "MODEL.RESNETS.STRIDE_IN_1X1": source.stride_in_1x1,
        }

    def payload(self, source: SourceBackbone, meta: dict[str, Any]) -> dict[str, Any]:
        return {"model": {k: v.numpy() for k, v in convert(source).items()}, "__author__": "transfer-bench",
                "matching_heuristics": True, "transfer_bench": meta}

    def write(self, obj: dict[str, Any], path: Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    def verify(self, source: SourceBackbone, path: Path) -> dict[str, float]:
        """Build Detectron2's own ResNet, load `path` with its own checkpointer, compare every stage."""
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.resnet import build_resnet_backbone

        cfg = apply_settings(get_cfg(), self.settings(source))
        cfg.MODEL.RESNETS.NORM = "BN"
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
        checkpointer = DetectionCheckpointer(backbone)
        incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
        missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
        wrong = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes]
        require_loaded(NAME, missing, incompatible.unexpected_keys, wrong)
        images = random_images()
        with torch.no_grad():
            out = backbone.eval()(images)
        features = [out[k] for k in cfg.MODEL.RESNETS.OUT_FEATURES]
        return compare_features(NAME, source_features(source, images), features)


DETECTRON2 = Detectron2Target()
