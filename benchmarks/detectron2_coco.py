"""COCO instance segmentation with Detectron2's Mask R-CNN R50-FPN: train, then COCOEvaluator.

The config is detectron2's model-zoo `mask_rcnn_R_50_FPN_1x.yaml`, then our schedule file
(`configs/detectron2/mask_rcnn_fpn_<schedule>.yaml`), then the settings recorded with the converted
checkpoint (depth, pixel mean/std, input format, stride placement), then the run (dataset, device,
seed), then the user's `--opts` through Detectron2's own `merge_from_list`.
`SOLVER.IMS_PER_BATCH` is Detectron2's global batch: it stays the protocol's whatever the process count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.spec import RunSpec, TrainResult, per_process_batch, split_opts

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


def protocol_config(schedule: str, settings: dict[str, Any] | None = None, opts: tuple[str, ...] = ()):
    """The protocol's config before the run's data and paths: zoo config, schedule file, checkpoint settings,
    overrides. Also what the protocol comparison reads."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from transfer.detectron2 import apply_settings

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_file(str(CONFIG_DIR / f"mask_rcnn_fpn_{schedule}.yaml"))
    if settings:
        apply_settings(cfg, settings)
    cfg.merge_from_list([item for pair in split_opts(opts) for item in pair])
    return cfg


def build_config(spec: RunSpec):
    train, val, num_classes = register_coco(spec.data_root)
    cfg = protocol_config(spec.schedule, spec.settings)
    cfg.MODEL.WEIGHTS = str(spec.weights)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.DEVICE = spec.device
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (val,)
    cfg.OUTPUT_DIR = str(spec.work_dir)
    cfg.SEED = spec.seed
    # the user's overrides come last, so that they win over everything above
    cfg.merge_from_list([item for pair in split_opts(spec.opts) for item in pair])
    per_process = per_process_batch(cfg.SOLVER.IMS_PER_BATCH, spec.world_size, "coco/detectron2")
    if spec.max_iters:  # dry run in one process: the per-process batch of `world_size` GPUs, no evaluation
        cfg.SOLVER.IMS_PER_BATCH = per_process
        cfg.SOLVER.MAX_ITER = spec.max_iters
        cfg.DATASETS.TEST = ()
        cfg.TEST.PRECISE_BN.ENABLED = False
        cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.freeze()
    return cfg


def protocol_record(cfg, spec: RunSpec) -> dict[str, Any]:
    global_batch = cfg.SOLVER.IMS_PER_BATCH * (spec.world_size if spec.max_iters else 1)
    return {"world_size": spec.world_size, "global_batch": global_batch,
            "per_process_batch": global_batch // spec.world_size, "lr": cfg.SOLVER.BASE_LR,
            "length": f"{cfg.SOLVER.MAX_ITER} iterations" if not spec.max_iters else f"{spec.max_iters} (dry run)",
            "lr_steps": list(cfg.SOLVER.STEPS), "seed": spec.seed, "seed_per_rank": "seed + rank"}


@contextlib.contextmanager
def _ddp_without_device_ids(device: str) -> Iterator[None]:
    """DefaultTrainer wraps the model with `device_ids=[local rank]`, which DDP refuses for a CPU module."""
    if device != "cpu":
        yield
        return
    from detectron2.engine import defaults

    original = defaults.create_ddp_model
    defaults.create_ddp_model = lambda model, **kwargs: original(model, **{**kwargs, "device_ids": None})
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def train_and_evaluate(cfg) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Train (resuming from OUTPUT_DIR's last checkpoint if there is one) and evaluate on the test set.
    Returns the metrics (the same on every rank's way out; rank 0's are the real ones) and step times."""
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from benchmarks.cpu_distributed import convert_sync_batchnorm_for_cpu, needs_cpu_replacements

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            model = super().build_model(cfg)
            return convert_sync_batchnorm_for_cpu(model) if needs_cpu_replacements(cfg.MODEL.DEVICE) else model

        @classmethod
        def build_evaluator(cls, cfg, dataset_name):
            return COCOEvaluator(dataset_name, output_dir=cfg.OUTPUT_DIR)

    class StepTimes(HookBase):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def before_step(self) -> None:
            self.start = time.perf_counter()

        def after_step(self) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    # as Detectron2's default_setup: each process its own seed, so that augmentations differ between GPUs
    seed_all_rng(cfg.SEED + comm.get_rank())
    with _ddp_without_device_ids(cfg.MODEL.DEVICE):
        trainer = Trainer(cfg)
    times = StepTimes()
    trainer.register_hooks([times])
    trainer.resume_or_load(resume=True)
    trainer.train()
    # DefaultTrainer's EvalHook evaluates after the last iteration on every rank and keeps the results on
    # the trainer (rank 0 gets the metrics, the others {} after the gather). Every rank leaves the same way:
    # a second evaluation on some ranks only would wait forever in its collectives.
    if hasattr(trainer, "_last_eval_results"):
        results = trainer._last_eval_results
    else:
        results = Trainer.test(cfg, trainer.model)
    comm.synchronize()
    metrics = {task: {metric: float(value) for metric, value in scores.items()}
               for task, scores in (results or {}).items()}
    return metrics, times.seconds


def run(spec: RunSpec) -> TrainResult:
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    spec.work_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(output=str(spec.work_dir / "log.txt"), distributed_rank=comm.get_rank())
    cfg = build_config(spec)
    metrics, seconds = train_and_evaluate(cfg)
    protocol = protocol_record(cfg, spec)
    if spec.max_iters:
        protocol["seconds_per_iter"] = seconds
    return TrainResult(cfg.dump(), metrics, protocol)
