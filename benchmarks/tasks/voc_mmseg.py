"""PASCAL VOC 2012 aug semantic segmentation, FCN-D8, in MMSegmentation (configs: benchmarks/configs/mmseg/)."""

from __future__ import annotations

from benchmarks.data.segmentation import SEG_METRICS, VOC_FILES, embedded_voc
from benchmarks.frameworks.openmmlab import protocol_check, reference_comparison, schedule_length
from benchmarks.reference import Published, Reference
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult

# MMSelfSup 0.x's configs/benchmarks/mmsegmentation/voc12aug/fcn_r50-d8_512x512_20k_voc12aug.py, in mmseg 0.x
# syntax: mmseg's FCN-D8 20k VOC12aug protocol on a plain-stem ResNet-50 (its _base_/models/fcn_r50-d8.py:
# type ResNet, SyncBN, init from torchvision://resnet50). In mmseg 1.x the same settings are mmseg's packaged
# config with that backbone.
MMSELFSUP_ZOO = "open-mmlab/mmselfsup docs/en/model_zoo.md, branch 0.x (one run each, no spread stated)"
REFERENCES = {
    "1x": Reference(
        reproduces="open-mmlab/mmselfsup configs/benchmarks/mmsegmentation/voc12aug/fcn_r50-d8_512x512_20k_voc12aug.py "
                   "(branch 0.x), i.e. mmseg's fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py on a plain ResNet-50",
        base="mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py",
        overrides={"model.pretrained": None, "model.backbone.type": "ResNet",
                   "model.backbone.init_cfg": dict(type="Pretrained", checkpoint="torchvision://resnet50")},
        reference_gpus=4,
        published=(
            Published("ImageNet-1M, MoCo v2, 200ep (MMSelfSup's mocov2_resnet50_8xb32-coslr-200e_in1k)",
                      {"mIoU": 67.55}, MMSELFSUP_ZOO, ckpt="mmselfsup-moco-v2-200ep"),
        ),
        tolerance=None,
        note="no run-to-run spread is published for this protocol",
    ),
    "2x": "none: MMSelfSup publishes its VOC12aug results for the 20k schedule only, and no near one is borrowed",
}


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.mmseg_semseg import run as train_and_evaluate

    return train_and_evaluate("voc", spec)


register(Benchmark(
    name="voc", framework="mmseg", title="PASCAL VOC 2012 aug semantic segmentation (FCN-D8 protocol)",
    required_files=VOC_FILES, embedded_data=embedded_voc, run=run, columns=tuple(Column(*c) for c in SEG_METRICS),
    required=(("sem_seg", "mIoU"),), headline=("mIoU",), check_protocol=protocol_check("voc", "mmseg", "fcn_d8_voc"),
    schedule_length=schedule_length("mmseg", "fcn_d8_voc"), references=REFERENCES,
    compare_reference=reference_comparison("mmseg", "fcn_d8_voc"),
))
