"""COCO Mask R-CNN R50-FPN in MMDetection (configs: benchmarks/configs/mmdet/)."""

from __future__ import annotations

from benchmarks.data.coco import COCO_FILES, COCO_METRICS, COCO_TITLE, embedded_coco
from benchmarks.openmmlab import protocol_check, schedule_length
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.mmdet_coco import run as train_and_evaluate

    return train_and_evaluate(spec)


register(Benchmark(
    name="coco", framework="mmdet", title=COCO_TITLE, required_files=COCO_FILES, embedded_data=embedded_coco,
    run=run, columns=tuple(Column(*c) for c in COCO_METRICS), required=(("bbox", "AP"), ("segm", "AP")),
    headline=("AP_bb", "AP_mk"), check_protocol=protocol_check("coco", "mmdet", "mask_rcnn_r50_fpn"),
    schedule_length=schedule_length("mmdet", "mask_rcnn_r50_fpn"),
))
