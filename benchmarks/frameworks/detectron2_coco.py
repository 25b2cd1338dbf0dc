"""COCO instance segmentation with Detectron2's Mask R-CNN R50-FPN, scored by its COCOEvaluator.

Starts from detectron2's model-zoo `mask_rcnn_R_50_FPN_1x.yaml`; our schedules are
`configs/detectron2/mask_rcnn_fpn_<schedule>.yaml`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from benchmarks.frameworks.detectron2_train import Datasets, Detectron2Protocol


def register_coco(data_root: Path) -> Datasets:
    """Register train2017 / val2017 of a COCO-layout folder."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    names = []
    for split in ("train", "val"):
        name = f"bench_coco_{split}_{hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:10]}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(data_root / "annotations" / f"instances_{split}2017.json"),
                                    str(data_root / f"{split}2017"))
        names.append(name)
    categories = json.loads((data_root / "annotations" / "instances_val2017.json").read_text())["categories"]
    return Datasets(train=(names[0],), test=names[1], num_classes=len(categories))


def coco_evaluator(dataset_name: str, output_dir: str) -> Any:
    from detectron2.evaluation import COCOEvaluator

    return COCOEvaluator(dataset_name, output_dir=output_dir)


PROTOCOL = Detectron2Protocol(task="coco", zoo_config="COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
                              config_stem="mask_rcnn_fpn", register=register_coco, evaluator=coco_evaluator)
