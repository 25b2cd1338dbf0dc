"""PASCAL VOC07+12 detection, Faster R-CNN R50-C4 in Detectron2, five seeds by default
(configs: benchmarks/configs/detectron2/faster_rcnn_c4_voc_*.yaml)."""

from __future__ import annotations

from benchmarks import detectron2_train
from benchmarks.data.voc_detection import VOC_DET_FILES, VOC_DET_METRICS, VOC_DET_TITLE, embedded_voc_detection
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def protocol() -> detectron2_train.Detectron2Protocol:
    from benchmarks.detectron2_voc import PROTOCOL

    return PROTOCOL


def run(spec: RunSpec) -> TrainResult:
    return detectron2_train.run(spec, protocol())


register(Benchmark(
    name="voc-det", framework="detectron2", title=VOC_DET_TITLE, required_files=VOC_DET_FILES,
    embedded_data=embedded_voc_detection, run=run, columns=tuple(Column(*c) for c in VOC_DET_METRICS),
    required=(("bbox", "AP50"), ("bbox", "AP")), headline=("AP50", "AP", "AP75"), schedules=("24k", "smoke"),
    default_seeds=5, **detectron2_train.declaration_hooks(protocol),
    note="AP50 / AP / AP75: VOC2007's 11-point AP (detectron2's PascalVOCDetectionEvaluator on VOC2007 test, "
         "what papers quote), AP = mean over IoU 0.50:0.95; *_int: the same with the integral (area) AP of "
         "VOC2010+. Papers report the mean of 5 trials; so does a row here when its seeds are finished",
))
