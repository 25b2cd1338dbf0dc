"""PASCAL VOC07+12 detection, Faster R-CNN R50-C4 in Detectron2, five seeds by default
(configs: benchmarks/configs/detectron2/faster_rcnn_c4_voc_*.yaml)."""

from __future__ import annotations

from benchmarks.data.voc_detection import VOC_DET_FILES, VOC_DET_METRICS, VOC_DET_TITLE, embedded_voc_detection
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.detectron2_voc import run

    return run(spec)


def check_protocol(schedule: str, opts: tuple[str, ...], processes: int) -> None:
    from benchmarks.detectron2_train import check_protocol
    from benchmarks.detectron2_voc import PROTOCOL

    check_protocol(PROTOCOL, schedule, opts, processes)


def schedule_length(schedule: str) -> str:
    from benchmarks.detectron2_train import schedule_length
    from benchmarks.detectron2_voc import PROTOCOL

    return schedule_length(PROTOCOL, schedule)


register(Benchmark(
    name="voc-det", framework="detectron2", title=VOC_DET_TITLE, required_files=VOC_DET_FILES,
    embedded_data=embedded_voc_detection, run=run, columns=tuple(Column(*c) for c in VOC_DET_METRICS),
    required=(("bbox", "AP50"), ("bbox", "AP")), headline=("AP50", "AP", "AP75"), schedules=("24k", "smoke"),
    default_seeds=5, check_protocol=check_protocol, schedule_length=schedule_length,
    note="AP50 / AP / AP75: VOC2007's 11-point AP (detectron2's PascalVOCDetectionEvaluator on VOC2007 test, "
         "what papers quote), AP = mean over IoU 0.50:0.95; *_int: the same with the integral (area) AP of "
         "VOC2010+. Papers report the mean of 5 trials; so does a row here when its seeds are finished",
))
