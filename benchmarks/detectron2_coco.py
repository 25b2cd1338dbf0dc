"""COCO instance segmentation with Detectron2's Mask R-CNN R50-FPN: train, then COCOEvaluator.

The config is detectron2's model-zoo `mask_rcnn_R_50_FPN_1x.yaml`, then our schedule file
(`configs/detectron2/mask_rcnn_fpn_<schedule>.yaml`), then the settings recorded with the converted
checkpoint (depth, pixel mean/std, input format, stride placement), then the dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs" / "detectron2"
ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


def register_coco(data_root: Path) -> tuple[str, str, int]:
    """Register train2017 / val2017 of a COCO-layout folder; returns (train name, val name, #classes)."""
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
    return names[0], names[1], len(categories)


def build_config(schedule: str, weights: Path, settings: dict[str, Any], data_root: Path, run_dir: Path, seed: int):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from transfer.detectron2 import apply_settings

    train, val, num_classes = register_coco(data_root)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_file(str(CONFIG_DIR / f"mask_rcnn_fpn_{schedule}.yaml"))
    apply_settings(cfg, settings)
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (val,)
    cfg.OUTPUT_DIR = str(run_dir)
    cfg.SEED = seed
    cfg.freeze()
    return cfg


def train_and_evaluate(cfg) -> dict[str, dict[str, float]]:
    """Train (resuming from OUTPUT_DIR's last checkpoint if there is one) and evaluate on the test set."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils.env import seed_all_rng

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name):
            return COCOEvaluator(dataset_name, output_dir=cfg.OUTPUT_DIR)

    seed_all_rng(cfg.SEED)  # what detectron2's default_setup would do; the model is built below
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    # DefaultTrainer's EvalHook evaluates after the last iteration and keeps the results on the trainer
    # (as DefaultTrainer.train itself reads them); evaluate here only when it did not run.
    results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
    return {task: {metric: float(value) for metric, value in scores.items()} for task, scores in results.items()}
