"""PASCAL VOC 2012 aug semantic segmentation, FCN-D8, in MMSegmentation (configs: benchmarks/configs/mmseg/)."""

from __future__ import annotations

from benchmarks.data.segmentation import SEG_METRICS, VOC_FILES, embedded_voc
from benchmarks.frameworks.openmmlab import declaration_hooks
from benchmarks.reference import Pin, Published, Reference
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult

# MMSelfSup 0.x's configs/benchmarks/mmsegmentation/voc12aug/fcn_r50-d8_512x512_20k_voc12aug.py, in mmseg 0.x
# syntax: mmseg's FCN-D8 20k VOC12aug protocol on a plain-stem ResNet-50 (its _base_/models/fcn_r50-d8.py:
# type ResNet, SyncBN, init from torchvision://resnet50). In mmseg 1.x the same settings are mmseg's packaged
# config with that backbone.
MMSELFSUP = "open-mmlab/mmselfsup"
MMSELFSUP_0X = "6faad81"  # the head of its branch 0.x
ZOO = Pin(MMSELFSUP, MMSELFSUP_0X, "docs/en/model_zoo.md", "55e2ad7cdd168b1ae884984479278f2b782763b6")
MMSELFSUP_ZOO = f"{ZOO} (one run each, no spread stated)"
BENCHMARKS = "configs/benchmarks/mmsegmentation"
PACKAGED = "fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py"
REFERENCES = {
    "1x": Reference(
        reproduces=f"{MMSELFSUP}@{MMSELFSUP_0X} {BENCHMARKS}/voc12aug/fcn_r50-d8_512x512_20k_voc12aug.py, i.e. "
                   f"mmseg's {PACKAGED} on a plain ResNet-50",
        base=f"mmseg::{PACKAGED}",
        overrides={"model.pretrained": None, "model.backbone.type": "ResNet",
                   "model.backbone.init_cfg": dict(type="Pretrained", checkpoint="torchvision://resnet50")},
        reference_gpus=4,
        published=(
            Published("ImageNet-1M, MoCo v2, 200ep (MMSelfSup's mocov2_resnet50_8xb32-coslr-200e_in1k)",
                      {"mIoU": 67.55}, MMSELFSUP_ZOO, ckpt="mmselfsup-moco-v2-200ep"),
        ),
        tolerance=None,
        note="no run-to-run spread is published for this protocol",
        pinned=(Pin(MMSELFSUP, MMSELFSUP_0X, f"{BENCHMARKS}/voc12aug/fcn_r50-d8_512x512_20k_voc12aug.py",
                    "17206a5171dcc357c589a1711afa52d87faeece0"),
                Pin(MMSELFSUP, MMSELFSUP_0X, f"{BENCHMARKS}/_base_/models/fcn_r50-d8.py",
                    "1ec49170ed9266023ca18f58861371f2f2e45cec"),
                Pin(MMSELFSUP, MMSELFSUP_0X, f"{BENCHMARKS}/_base_/datasets/pascal_voc12.py",
                    "ba1d42d0c5781f56dc177d860d856bb34adce555"),
                Pin(MMSELFSUP, MMSELFSUP_0X, f"{BENCHMARKS}/_base_/datasets/pascal_voc12_aug.py",
                    "3f23b6717d53ad29f02dd15046802a2631a5076b"),
                Pin(MMSELFSUP, MMSELFSUP_0X, f"{BENCHMARKS}/_base_/schedules/schedule_20k.py",
                    "73c7021972bb8e955440b5afc8eaf0a4853b98a7"),
                Pin("open-mmlab/mmsegmentation", "v1.2.2", f"configs/{PACKAGED}",
                    "eac86d5389fdeeea02b078212feb031d721605eb", installed=f"mmseg:.mim/configs/{PACKAGED}"),
                ZOO),
        # read from the 0.x configs pinned above, with mmcv 1.x's defaults: "SyncBN" was torch's layer, Resize cv2
        built={"norm layers: backbone": "SyncBatchNorm", "segmentor": "EncoderDecoder, FCNHead",
               "norm layers: decode head": "SyncBatchNorm", "norm layers: auxiliary head": "SyncBatchNorm",
               "precise BN: estimator": "none", "train resize": "Resize (ratio_range), cv2 bilinear",
               "framework": "mmseg 0.x (MMSelfSup 0.x's benchmarks)"},
        built_source="mmseg 0.x with mmcv 1.x, which MMSelfSup 0.x's benchmarks ran, read from its configs pinned "
                     "above",
        built_differences={
            "train resize": "mmseg 1.x's RandomResize is 0.x's Resize with ratio_range: the same draw of a scale "
                            "from the ratio range",
            "framework": "mmseg 1.x restructured the configs; what they build is matched row by row above"},
    ),
    "2x": "none: MMSelfSup publishes its VOC12aug results for the 20k schedule only, and no near one is borrowed",
}


def run(spec: RunSpec) -> TrainResult:
    from benchmarks.frameworks.mmseg_semseg import run as train_and_evaluate

    return train_and_evaluate("voc", spec)


register(Benchmark(
    name="voc", framework="mmseg", title="PASCAL VOC 2012 aug semantic segmentation (FCN-D8 protocol)",
    required_files=VOC_FILES, embedded_data=embedded_voc, run=run, columns=tuple(Column(*c) for c in SEG_METRICS),
    required=(("sem_seg", "mIoU"),), headline=("mIoU",), references=REFERENCES,
    **declaration_hooks("voc", "mmseg", "fcn_d8_voc"),
))
