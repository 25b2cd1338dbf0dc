"""PASCAL VOC 2012 aug semantic segmentation, FCN-D8, in MMSegmentation (configs: benchmarks/configs/mmseg/)."""

from __future__ import annotations

from benchmarks.data.segmentation import SEG_METRICS, VOC_FILES, embedded_voc
from benchmarks.openmmlab import protocol_check, schedule_length
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.mmseg_semseg import run as train_and_evaluate

    return train_and_evaluate("voc", spec)


register(Benchmark(
    name="voc", framework="mmseg", title="PASCAL VOC 2012 aug semantic segmentation (FCN-D8 protocol)",
    required_files=VOC_FILES, embedded_data=embedded_voc, run=run, columns=tuple(Column(*c) for c in SEG_METRICS),
    required=(("sem_seg", "mIoU"),), headline=("mIoU",), check_protocol=protocol_check("voc", "mmseg", "fcn_d8_voc"),
    schedule_length=schedule_length("mmseg", "fcn_d8_voc"),
))
