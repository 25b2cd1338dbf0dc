"""COCO Mask R-CNN R50-FPN in MMDetection (configs: benchmarks/configs/mmdet/)."""

from __future__ import annotations

from benchmarks.data.coco import COCO_CLAIMS, COCO_FILES, COCO_METRICS, COCO_TITLE, embedded_coco
from benchmarks.frameworks.openmmlab import protocol_check, reference_comparison, schedule_length
from benchmarks.reference import Published, Reference
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult

MMDET_README = "open-mmlab/mmdetection configs/selfsup_pretrain/README.md (one run each, no spread stated)"
EVALUATES_ONCE = "evaluates once, after training: the per-epoch evaluations change neither the model nor its score"


def _selfsup(config: str, epochs: int, published: tuple[Published, ...]) -> Reference:
    return Reference(
        reproduces=f"open-mmlab/mmdetection configs/selfsup_pretrain/{config} (packaged with mmdet)",
        base=f"mmdet::selfsup_pretrain/{config}", overrides={}, reference_gpus=8,
        differences={"train_cfg.val_interval": EVALUATES_ONCE},
        published=published,
        # mmdet states no spread; MoCo's authors give 0.3 AP as COCO's run-to-run variation (moco issue 39)
        tolerance=0.3, tolerance_source="COCO's run-to-run variation per MoCo's first author (moco issue 39)",
    )


REFERENCES = {
    "1x": _selfsup("mask-rcnn_r50-mocov2-pre_fpn_1x_coco.py", 12, (
        Published("ImageNet-1M, MoCo v2, 800ep", {"AP_bb": 38.0, "AP_mk": 34.3}, MMDET_README, ckpt="moco-v2-800ep"),
        Published("ImageNet-1M, SwAV, 800ep", {"AP_bb": 39.1, "AP_mk": 35.7}, MMDET_README, ckpt="swav-800ep"),
    )),
    "2x": _selfsup("mask-rcnn_r50-mocov2-pre_fpn_ms-2x_coco.py", 24, (
        Published("ImageNet-1M, MoCo v2, 800ep", {"AP_bb": 40.8, "AP_mk": 36.8}, MMDET_README, ckpt="moco-v2-800ep"),
        Published("ImageNet-1M, SwAV, 800ep", {"AP_bb": 41.3, "AP_mk": 37.3}, MMDET_README, ckpt="swav-800ep"),
    )),
}


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.mmdet_coco import run as train_and_evaluate

    return train_and_evaluate(spec)


register(Benchmark(
    name="coco", framework="mmdet", title=COCO_TITLE, required_files=COCO_FILES, embedded_data=embedded_coco,
    run=run, columns=tuple(Column(*c) for c in COCO_METRICS), required=(("bbox", "AP"), ("segm", "AP")),
    headline=("AP_bb", "AP_mk"), claims=COCO_CLAIMS,
    check_protocol=protocol_check("coco", "mmdet", "mask_rcnn_r50_fpn"),
    schedule_length=schedule_length("mmdet", "mask_rcnn_r50_fpn"), references=REFERENCES,
    compare_reference=reference_comparison("mmdet", "mask_rcnn_r50_fpn"),
))
