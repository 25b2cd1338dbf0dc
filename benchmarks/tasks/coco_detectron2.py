"""COCO Mask R-CNN R50-FPN in Detectron2 (configs: benchmarks/configs/detectron2/mask_rcnn_fpn_*.yaml)."""

from __future__ import annotations

from benchmarks import detectron2_train
from benchmarks.data.coco import COCO_FILES, COCO_METRICS, COCO_TITLE, embedded_coco
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def protocol() -> detectron2_train.Detectron2Protocol:
    from benchmarks.detectron2_coco import PROTOCOL

    return PROTOCOL


def run(spec: RunSpec) -> TrainResult:
    return detectron2_train.run(spec, protocol())


register(Benchmark(
    name="coco", framework="detectron2", title=COCO_TITLE, required_files=COCO_FILES, embedded_data=embedded_coco,
    run=run, columns=tuple(Column(*c) for c in COCO_METRICS), required=(("bbox", "AP"), ("segm", "AP")),
    headline=("AP_bb", "AP_mk"), **detectron2_train.declaration_hooks(protocol),
))
