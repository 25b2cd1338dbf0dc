"""COCO instance segmentation with MMDetection's Mask R-CNN R50-FPN: mmengine Runner, then CocoMetric.

The config is `configs/mmdet/mask_rcnn_r50_fpn_<schedule>.py` (over mmdet's packaged
`mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py`), then the converted checkpoint's settings, then the dataset:
the category list comes from the annotation file, so the same code reads COCO and the embedded data.
"""

from __future__ import annotations

import json
import math

from benchmarks.frameworks.openmmlab import apply_backbone, finish_config, load_config, set_dataset, train_and_evaluate
from benchmarks.spec import RunSpec, TrainResult

# CocoMetric's names (fractions) -> the suite's (Detectron2's, in percent)
METRIC_NAMES = {"mAP": "AP", "mAP_50": "AP50", "mAP_75": "AP75", "mAP_s": "APs", "mAP_m": "APm", "mAP_l": "APl"}


def build_config(spec: RunSpec):
    cfg = load_config("mmdet", "mask_rcnn_r50_fpn", spec.schedule)
    cfg.model.neck.in_channels = apply_backbone(cfg, spec.weights, spec.settings)
    data_root = spec.data_root
    categories = json.loads((data_root / "annotations" / "instances_val2017.json").read_text())["categories"]
    classes = tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
    cfg.model.roi_head.bbox_head.num_classes = len(classes)
    cfg.model.roi_head.mask_head.num_classes = len(classes)
    set_dataset(cfg, data_root, metainfo=dict(classes=classes))
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = str(data_root / "annotations" / "instances_val2017.json")
    finish_config(cfg, spec, "coco/mmdet")
    return cfg


def run(spec: RunSpec) -> TrainResult:
    return train_and_evaluate(build_config(spec), spec, coco_metrics)


def coco_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for task in ("bbox", "segm"):
        for theirs, ours in METRIC_NAMES.items():
            value = float(metrics.get(f"coco/{task}_{theirs}", math.nan))
            # pycocotools' -1 (a size bucket without objects) is NaN, as in Detectron2's report
            result.setdefault(task, {})[ours] = 100 * value if value >= 0 else math.nan
    return result
