"""MMDetection and MMSegmentation targets: a `.pth` for `init_cfg=dict(type='Pretrained', checkpoint=...)`.

Their `ResNet` backbones use the torchvision key layout, so the key map is the identity; what differs
between the two is only the backbone class that verifies the file. The checkpoint is
`{"state_dict": ..., "meta": ...}` of plain tensors and values, so it loads with weights_only=True.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.checkpoint import atomic_save
from transfer.source import SourceBackbone
from transfer.verify import compare_features, random_images, require_loaded, source_features


@contextlib.contextmanager
def _quiet_mmengine():
    """mmengine logs every initialised tensor at INFO; keep warnings (e.g. missing keys) only."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# timm / torchvision name -> OpenMMLab ResNet name: identical for every tensor (BN counters included).
KEY_MAP = "identity"


@dataclass(frozen=True)
class OpenMMLabTarget:
    name: str  # mmdet | mmseg
    package: str  # where its ResNet lives

    @property
    def suffix(self) -> str:
        return f".{self.name}.pth"

    def resnet_class(self) -> type:
        if self.package == "mmdet":
            from mmdet.models.backbones import ResNet
        else:
            from mmseg.models.backbones import ResNet
        return ResNet

    def settings(self, source: SourceBackbone) -> dict[str, Any]:
        """Backbone and data-preprocessor settings for this backbone (mmcv reads images as BGR)."""
        mean, std = source.pixel_stats_255()
        return {
            # style: where a downsampling bottleneck strides ("caffe": in its 1x1 convolution)
            "model.backbone": {"type": "ResNet", "depth": source.depth, "deep_stem": False,
                               "style": "caffe" if source.stride_in_1x1 else "pytorch"},
            "model.data_preprocessor": {
                "mean": mean,
                "std": std,
                "bgr_to_rgb": source.input["channel_order"] == "RGB",
            },
        }

    def payload(self, source: SourceBackbone, meta: dict[str, Any]) -> dict[str, Any]:
        return {"state_dict": dict(source.state_dict), "meta": meta}

    def write(self, obj: dict[str, Any], path: Path) -> None:
        atomic_save(obj, path)

    def verify(self, source: SourceBackbone, path: Path) -> dict[str, float]:
        """Build this framework's ResNet with a Pretrained init_cfg, init, and compare tensors and stages."""
        model = self.resnet_class()(
            depth=source.depth, out_indices=(0, 1, 2, 3), style=self.settings(source)["model.backbone"]["style"],
            frozen_stages=-1,
            norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False,
            init_cfg=dict(type="Pretrained", checkpoint=str(path)),
        )
        with _quiet_mmengine():
            model.init_weights()
        # Pretrained init loads with strict=False: check every tensor ourselves.
        target = model.state_dict()
        expected = source.state_dict
        missing = [k for k in target if k not in expected or not torch.equal(target[k], expected[k])]
        unused = [k for k in expected if k not in target]
        require_loaded(self.name, missing, unused)
        images = random_images()
        model.eval()  # OpenMMLab's ResNet.train() returns None: no chaining
        with torch.no_grad():
            out = model(images)
        return compare_features(self.name, source_features(source, images), list(out))


MMDET = OpenMMLabTarget("mmdet", "mmdet")
MMSEG = OpenMMLabTarget("mmseg", "mmseg")
