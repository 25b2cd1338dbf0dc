"""ADE20K semantic segmentation, UPerNet, in MMSegmentation (configs: benchmarks/configs/mmseg/)."""

from __future__ import annotations

from benchmarks.data.segmentation import ADE20K_FILES, SEG_METRICS, embedded_ade20k
from benchmarks.frameworks.openmmlab import declaration_hooks
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult

# mmseg's model zoo reports UPerNet R-50 on ResNetV1c (a deep stem, open-mmlab://resnet50_v1c), which a
# plain-stem ResNet's weights do not fit; no self-supervised benchmark publishes this protocol on a plain one.
NO_REFERENCE = ("none: no published result of a plain-stem ResNet-50 under mmseg's UPerNet ADE20K protocol "
                "(mmseg's model zoo reports its deep-stem ResNetV1c); no near one is borrowed")


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.mmseg_semseg import run as train_and_evaluate

    return train_and_evaluate("ade20k", spec)


register(Benchmark(
    name="ade20k", framework="mmseg", title="ADE20K semantic segmentation (UPerNet protocol)",
    required_files=ADE20K_FILES, embedded_data=embedded_ade20k, run=run,
    columns=tuple(Column(*c) for c in SEG_METRICS), required=(("sem_seg", "mIoU"),), headline=("mIoU",),
    references={"1x": NO_REFERENCE, "2x": NO_REFERENCE}, **declaration_hooks("ade20k", "mmseg", "upernet_ade20k"),
))
