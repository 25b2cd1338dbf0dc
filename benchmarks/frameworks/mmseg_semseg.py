"""Semantic segmentation with MMSegmentation: VOC 2012 aug (FCN-D8) and ADE20K (UPerNet), then IoUMetric.

The config is `configs/mmseg/<model>_<schedule>.py` (over mmseg's packaged config of the protocol),
then the converted checkpoint's settings, then the dataset root. Class lists are the datasets' own
(mmseg's PascalVOCDataset / ADE20KDataset): the embedded data uses a few of the real labels.
"""

from __future__ import annotations

from benchmarks.frameworks.openmmlab import apply_backbone, finish_config, load_config, set_dataset, train_and_evaluate
from benchmarks.spec import RunSpec, TrainResult

MODELS = {"voc": "fcn_d8_voc", "ade20k": "upernet_ade20k"}


def build_config(task: str, spec: RunSpec):
    cfg = load_config("mmseg", MODELS[task], spec.schedule)
    stages = apply_backbone(cfg, spec.weights, spec.settings)
    decode = cfg.model.decode_head
    decode.in_channels = [stages[i] for i in decode.in_index] if isinstance(decode.in_index, (list, tuple)) \
        else stages[decode.in_index]
    cfg.model.auxiliary_head.in_channels = stages[cfg.model.auxiliary_head.in_index]
    set_dataset(cfg, spec.data_root)
    finish_config(cfg, spec, f"{task}/mmseg")
    return cfg


def run(task: str, spec: RunSpec) -> TrainResult:
    return train_and_evaluate(build_config(task, spec), spec, segmentation_metrics)


def segmentation_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """IoUMetric reports percentages already."""
    return {"sem_seg": {name: float(metrics[name]) for name in ("mIoU", "mAcc", "aAcc") if name in metrics}}
