"""PASCAL VOC07+12 detection, Faster R-CNN R50-C4 in Detectron2, five seeds by default
(configs: benchmarks/configs/detectron2/faster_rcnn_c4_voc_*.yaml)."""

from __future__ import annotations

from benchmarks import moco_reference as moco
from benchmarks.data.voc_detection import VOC_DET_FILES, VOC_DET_METRICS, VOC_DET_TITLE, embedded_voc_detection
from benchmarks.frameworks import detectron2_train
from benchmarks.reference import Published, Reference
from benchmarks.registry import Benchmark, Column, register
from benchmarks.spec import RunSpec, TrainResult

MOCO_README = f"{moco.README} (means of 5 trials; std 'expected to be 0.2, 0.2, 0.4')"
MOCO_STD = {"AP50": 0.2, "AP": 0.2, "AP75": 0.4}

# MoCo's detection/configs/pascal_voc_R_50_C4_24k.yaml over Base-RCNN-C4-BN.yaml (no _BASE_ of its own:
# Detectron2's defaults), with pascal_voc_R_50_C4_24k_moco.yaml's input convention (a torchvision-style
# checkpoint, as every backbone this suite converts). MSRA's caffe-style R-50.pkl runs without that last file.
REFERENCE_24K = Reference(
    reproduces=f"{moco.MOCO}@{moco.MOCO_COMMIT} detection/configs/pascal_voc_R_50_C4_24k_moco.yaml (over "
               "pascal_voc_R_50_C4_24k.yaml and Base-RCNN-C4-BN.yaml)",
    base=None,
    overrides={
        # Base-RCNN-C4-BN.yaml
        "MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 1000, "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm",
        "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.RESNETS.NORM": "naiveSyncBN", "TEST.PRECISE_BN.ENABLED": True,
        "SOLVER.IMS_PER_BATCH": 16, "SOLVER.BASE_LR": 0.02,
        # pascal_voc_R_50_C4_24k.yaml
        "MODEL.MASK_ON": False, "MODEL.ROI_HEADS.NUM_CLASSES": 20,
        "INPUT.MIN_SIZE_TRAIN": (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), "INPUT.MIN_SIZE_TEST": 800,
        "SOLVER.STEPS": (18000, 22000), "SOLVER.MAX_ITER": 24000, "SOLVER.WARMUP_ITERS": 100,
        # pascal_voc_R_50_C4_24k_moco.yaml
        "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530], "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
        "MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB",
    },
    differences=moco.SINCE_THEN,
    pinned=(moco.moco_file("detection/configs/pascal_voc_R_50_C4_24k_moco.yaml",
                           "eebe69051d6ca5acd06464d08aeaadd9d140a1ac"),
            moco.moco_file("detection/configs/pascal_voc_R_50_C4_24k.yaml", "a05eb5e2be093bb27ca24b103975646ebcdc2a10"),
            moco.moco_file("detection/configs/Base-RCNN-C4-BN.yaml", "eaa5b376e6008678c01f935e4cfa0346da2579af"),
            moco.moco_file("detection/train_net.py", "4055eaf6ea7916e687718868316d9b1a775c6d8c"), moco.README,
            moco.DEFAULTS_SOURCE),
    built={**moco.BUILT, "RoI heads": "Res5ROIHeadsExtraNorm", "norm layers: RoI head (res5)": moco.NAIVE},
    built_source=moco.BUILT_SOURCE, built_differences=moco.BUILT_DIFFERENCES, defaults=moco.DEFAULTS,
    published=(
        Published("ImageNet-1M, supervised (MSRA R-50, caffe-style: pascal_voc_R_50_C4_24k.yaml)",
                  {"AP50": 81.3, "AP": 53.5, "AP75": 58.8}, MOCO_README, 5, MOCO_STD,
                  "detectron2://ImageNetPretrained/MSRA/R-50.pkl"),
        Published("ImageNet-1M, MoCo v1, 200ep", {"AP50": 81.5, "AP": 55.9, "AP75": 62.6}, MOCO_README, 5, MOCO_STD,
                  "moco-v1-200ep"),
        Published("ImageNet-1M, MoCo v2, 200ep", {"AP50": 82.4, "AP": 57.0, "AP75": 63.6}, MOCO_README, 5, MOCO_STD,
                  "moco-v2-200ep"),
        Published("ImageNet-1M, MoCo v2, 800ep", {"AP50": 82.5, "AP": 57.4, "AP75": 64.0}, MOCO_README, 5, MOCO_STD,
                  "moco-v2-800ep"),
    ),
)


def protocol() -> detectron2_train.Detectron2Protocol:
    from benchmarks.frameworks.detectron2_voc import PROTOCOL

    return PROTOCOL


def run(spec: RunSpec) -> TrainResult:
    return detectron2_train.run(spec, protocol())


register(Benchmark(
    name="voc-det", framework="detectron2", title=VOC_DET_TITLE, required_files=VOC_DET_FILES,
    embedded_data=embedded_voc_detection, run=run, columns=tuple(Column(*c) for c in VOC_DET_METRICS),
    required=(("bbox", "AP50"), ("bbox", "AP")), headline=("AP50", "AP", "AP75"), schedules=("24k", "smoke"),
    default_seeds=5, references={"24k": REFERENCE_24K}, **detectron2_train.declaration_hooks(protocol),
    note="AP50 / AP / AP75: VOC2007's 11-point AP (detectron2's PascalVOCDetectionEvaluator on VOC2007 test, "
         "what papers quote), AP = mean over IoU 0.50:0.95; *_int: the same with the integral (area) AP of "
         "VOC2010+. Papers report the mean of 5 trials; so does a row here when its seeds are finished",
))
