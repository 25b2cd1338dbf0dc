"""COCO Mask R-CNN R50-FPN in Detectron2 (configs: benchmarks/configs/detectron2/)."""

from __future__ import annotations

from benchmarks.data.coco import COCO_FILES, COCO_METRICS, COCO_TITLE, embedded_coco
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult, per_process_batch
from pretrain.errors import UserError


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.detectron2_coco import run as train_and_evaluate

    return train_and_evaluate(spec)


def check_protocol(schedule: str, opts: tuple[str, ...], processes: int) -> None:
    from benchmarks.detectron2_coco import protocol_config

    try:
        cfg = protocol_config(schedule, opts=opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise UserError(f"--opts: Detectron2 refuses {' '.join(opts)}: {e}") from None
    per_process_batch(cfg.SOLVER.IMS_PER_BATCH, processes, "coco/detectron2")


register(Benchmark(
    name="coco", framework="detectron2", title=COCO_TITLE, required_files=COCO_FILES, embedded_data=embedded_coco,
    run=run, columns=tuple(Column(*c) for c in COCO_METRICS), required=(("bbox", "AP"), ("segm", "AP")),
    headline=("AP_bb", "AP_mk"), check_protocol=check_protocol,
))
