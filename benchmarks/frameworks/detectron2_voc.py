"""PASCAL VOC07+12 detection with Detectron2's Faster R-CNN R50-C4, scored by its PascalVOCDetectionEvaluator.

Starts from detectron2's model-zoo `PascalVOC-Detection/faster_rcnn_R_50_C4.yaml`; our schedules are
`configs/detectron2/faster_rcnn_c4_voc_<schedule>.yaml` (the settings pretraining papers since MoCo use).
In C4 the backbone ends at res4 and res5 is the RoI head (`roi_heads.res5.*`): the converted checkpoint's
`res5.*` lands there through Detectron2's matching heuristics. As in MoCo's protocol the res5 head ends
with one more norm layer (`roi_heads.res5.norm`, not pretrained). Detectron2's head assumes bottleneck
blocks; for ResNet-18/34 backbones (the embedded demo's) it is built from their basic blocks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from torch import nn

from benchmarks.frameworks.detectron2_train import Datasets, Detectron2Protocol
from pretrain.models import RESNET_DEPTHS


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Detectron2's Res5ROIHeads plus a norm layer after res5, and basic-block res5 for ResNet-18/34."""

    @classmethod
    def _build_res5_block(cls, cfg) -> tuple[nn.Sequential, int]:
        layout = RESNET_DEPTHS[cfg.MODEL.RESNETS.DEPTH]
        if layout.block == "bottleneck":  # detectron2's own head (3 bottleneck blocks: ResNet-50/101)
            res5, out_channels = super()._build_res5_block(cfg)
        else:
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8  # res5 is 8x res2
            blocks = layout.blocks_per_stage[-1]
            res5 = nn.Sequential(*ResNet.make_stage(
                BasicBlock, blocks, stride_per_block=[2] + [1] * (blocks - 1), in_channels=out_channels // 2,
                out_channels=out_channels, norm=cfg.MODEL.RESNETS.NORM))
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return res5, out_channels


class VocBothMetricsEvaluator(PascalVOCDetectionEvaluator):
    """Detectron2's VOC evaluator, run twice: VOC2007's 11-point AP (`bbox`, what papers quote for VOC07
    test) and the integral AP of VOC2010+ (`bbox_integral`). Every rank calls both (each gathers)."""

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        results = {}
        for eleven_point, group in ((True, "bbox"), (False, "bbox_integral")):
            self._is_2007 = eleven_point
            scores = super().evaluate()
            if scores:
                results[group] = dict(scores["bbox"])
        return results or None


def register_voc(data_root: Path) -> Datasets:
    """VOC2007 trainval + VOC2012 trainval for training, VOC2007 test for evaluation, from a VOCdevkit."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES, register_pascal_voc

    tag = hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:10]
    names = []
    for year, split in ((2007, "trainval"), (2012, "trainval"), (2007, "test")):
        name = f"bench_voc_{year}_{split}_{tag}"
        if name not in DatasetCatalog.list():
            register_pascal_voc(name, str(data_root / f"VOC{year}"), split, year, CLASS_NAMES)
        names.append(name)
    return Datasets(train=tuple(names[:2]), test=names[2], num_classes=len(CLASS_NAMES))


def voc_evaluator(dataset_name: str, output_dir: str) -> Any:
    return VocBothMetricsEvaluator(dataset_name)


def use_extra_norm_head(cfg) -> None:
    cfg.MODEL.ROI_HEADS.NAME = Res5ROIHeadsExtraNorm.__name__


PROTOCOL = Detectron2Protocol(task="voc-det", zoo_config="PascalVOC-Detection/faster_rcnn_R_50_C4.yaml",
                              config_stem="faster_rcnn_c4_voc", register=register_voc, evaluator=voc_evaluator,
                              adapt=use_extra_norm_head)
