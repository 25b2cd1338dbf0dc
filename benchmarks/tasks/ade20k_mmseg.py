"""ADE20K semantic segmentation, UPerNet, in MMSegmentation (configs: benchmarks/configs/mmseg/)."""

from __future__ import annotations

from benchmarks.data.segmentation import ADE20K_FILES, SEG_METRICS, embedded_ade20k
from benchmarks.openmmlab import protocol_check, schedule_length
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.mmseg_semseg import run as train_and_evaluate

    return train_and_evaluate("ade20k", spec)


register(Benchmark(
    name="ade20k", framework="mmseg", title="ADE20K semantic segmentation (UPerNet protocol)",
    required_files=ADE20K_FILES, embedded_data=embedded_ade20k, run=run,
    columns=tuple(Column(*c) for c in SEG_METRICS), required=(("sem_seg", "mIoU"),), headline=("mIoU",),
    check_protocol=protocol_check("ade20k", "mmseg", "upernet_ade20k"),
    schedule_length=schedule_length("mmseg", "upernet_ade20k"),
))
