"""COCO Mask R-CNN R50-FPN in Detectron2 (configs: benchmarks/configs/detectron2/)."""

from __future__ import annotations

from benchmarks.data.coco import COCO_FILES, COCO_METRICS, COCO_TITLE, embedded_coco
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.detectron2_coco import run

    return run(spec)


def check_protocol(schedule: str, opts: tuple[str, ...], processes: int) -> None:
    from benchmarks.detectron2_coco import PROTOCOL
    from benchmarks.detectron2_train import check_protocol

    check_protocol(PROTOCOL, schedule, opts, processes)


def schedule_length(schedule: str) -> str:
    from benchmarks.detectron2_coco import PROTOCOL
    from benchmarks.detectron2_train import schedule_length

    return schedule_length(PROTOCOL, schedule)


register(Benchmark(
    name="coco", framework="detectron2", title=COCO_TITLE, required_files=COCO_FILES, embedded_data=embedded_coco,
    run=run, columns=tuple(Column(*c) for c in COCO_METRICS), required=(("bbox", "AP"), ("segm", "AP")),
    headline=("AP_bb", "AP_mk"), check_protocol=check_protocol, schedule_length=schedule_length,
))
