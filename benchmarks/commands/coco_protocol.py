"""The COCO Mask R-CNN protocol as each framework's resolved config states it, side by side.

Each framework runs the protocol its own literature publishes results under (benchmarks/reference.py):
Detectron2 MoCo's, MMDetection its selfsup_pretrain configs. They are not the same protocol, and a
number from one is not comparable with a number from the other; this table says exactly where they
differ. `python -m benchmarks protocols [--schedule 1x]` prints it. Every value is read from the configs
the benchmarks run (Detectron2's merged CfgNode, MMDetection's mmengine Config), never typed by hand;
`tests/test_protocol.py` fails on a difference outside `JUSTIFIED`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Settings that differ between the frameworks, and why: each follows its own published reference.
MOCO_VS_MMDET = "each follows its published reference (Detectron2: MoCo's protocol; MMDetection: selfsup_pretrain)"
JUSTIFIED = {
    "schedule": "each framework's own unit: Detectron2 counts iterations (1x: 90k x 16 images = 12.3 epochs of "
                "COCO's 117k annotated training images, steps at 8.2 and 10.9 epochs; 2x doubles it), MMDetection "
                "epochs (12, steps after 8 and 11; 2x: 24, after 16 and 22)",
    "train input": MOCO_VS_MMDET,
    "weight decay": MOCO_VS_MMDET,
    "warmup": MOCO_VS_MMDET,
    "frozen backbone stages": MOCO_VS_MMDET,
    "norm: backbone / FPN / box head / mask head": MOCO_VS_MMDET,
    "BN statistics": MOCO_VS_MMDET,
}


def _sizes(values: Iterable[int]) -> str:
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]}"
    steps = {b - a for a, b in zip(values, values[1:], strict=False)}
    return f"{values[0]}–{values[-1]} step {steps.pop()}" if len(steps) == 1 else ", ".join(map(str, values))


def detectron2_settings(schedule: str) -> dict[str, str]:
    from benchmarks.frameworks.detectron2_coco import PROTOCOL
    from benchmarks.frameworks.detectron2_train import protocol_config

    cfg = protocol_config(PROTOCOL, schedule)
    i, s, m = cfg.INPUT, cfg.SOLVER, cfg.MODEL
    sampling = {"choice": "one per image", "range": "uniform range"}[i.MIN_SIZE_TRAIN_SAMPLING]
    decay_norm = s.WEIGHT_DECAY_NORM
    return {
        "train input": f"short side {_sizes(i.MIN_SIZE_TRAIN)} ({sampling}), long side ≤ {i.MAX_SIZE_TRAIN}",
        "train flip": "horizontal, p 0.5" if i.RANDOM_FLIP == "horizontal" else i.RANDOM_FLIP,
        "test input": f"short side {i.MIN_SIZE_TEST}, long side ≤ {i.MAX_SIZE_TEST}",
        "global batch": str(s.IMS_PER_BATCH),
        "optimizer": f"SGD, momentum {s.MOMENTUM}" + (", nesterov" if s.NESTEROV else ""),
        "lr": f"{s.BASE_LR:g}",
        "weight decay": f"{s.WEIGHT_DECAY:g}, norm layers {decay_norm:g}, biases "
                        f"{s.WEIGHT_DECAY if s.WEIGHT_DECAY_BIAS is None else s.WEIGHT_DECAY_BIAS:g}",
        "warmup": f"{s.WARMUP_METHOD}, {s.WARMUP_ITERS} iterations from {s.WARMUP_FACTOR:g}",
        "schedule": f"{s.MAX_ITER} iterations, x{s.GAMMA:g} at {', '.join(map(str, s.STEPS))}",
        "norm: backbone / FPN / box head / mask head":
            " / ".join(norm or "none" for norm in (m.RESNETS.NORM, m.FPN.NORM, m.ROI_BOX_HEAD.NORM,
                                                   m.ROI_MASK_HEAD.NORM)),
        # FREEZE_AT: 1 freezes the stem, 2 the stem and res2, ...
        "frozen backbone stages": _frozen(m.BACKBONE.FREEZE_AT),
        "BN statistics": f"trained ({m.RESNETS.NORM})" + (", precise BN after training" if cfg.TEST.PRECISE_BN.ENABLED
                                                          else ""),
        "box head": f"{m.ROI_BOX_HEAD.NUM_CONV} conv + {m.ROI_BOX_HEAD.NUM_FC} fc",
        "mask head": f"{m.ROI_MASK_HEAD.NUM_CONV} conv",
        "anchors": f"sizes {', '.join(str(a[0]) for a in m.ANCHOR_GENERATOR.SIZES)}, ratios "
                   f"{', '.join(f'{r:g}' for r in m.ANCHOR_GENERATOR.ASPECT_RATIOS[0])}",
        "RPN proposals train / test": f"{m.RPN.PRE_NMS_TOPK_TRAIN} → {m.RPN.POST_NMS_TOPK_TRAIN} / "
                                      f"{m.RPN.PRE_NMS_TOPK_TEST} → {m.RPN.POST_NMS_TOPK_TEST}, "
                                      f"NMS {m.RPN.NMS_THRESH:g}",
        "RoIs sampled per image": f"{m.ROI_HEADS.BATCH_SIZE_PER_IMAGE}, {m.ROI_HEADS.POSITIVE_FRACTION:g} positive",
        "test detections": f"≤ {cfg.TEST.DETECTIONS_PER_IMAGE} per image, score ≥ {m.ROI_HEADS.SCORE_THRESH_TEST:g}, "
                           f"NMS {m.ROI_HEADS.NMS_THRESH_TEST:g}",
        "AMP": "on" if s.AMP.ENABLED else "off",
        "gradient clipping": "on" if s.CLIP_GRADIENTS.ENABLED else "off",
    }


# mmdet's named box heads and what they hold
SHARED_HEADS = {"Shared2FCBBoxHead": "0 conv + 2 fc", "Shared4Conv1FCBBoxHead": "4 conv + 1 fc"}


def _frozen(count: int) -> str:
    """Detectron2's FREEZE_AT (mmdet's frozen_stages + 1): how many of stem, res2, ... are frozen."""
    parts = ["stem", "res2", "res3", "res4", "res5"][:count]
    return " + ".join(parts) if parts else "none"


def _transform(pipeline: list[dict[str, Any]], *types: str) -> dict[str, Any]:
    found = [t for t in pipeline if t["type"] in types]
    if len(found) != 1:
        raise ValueError(f"expected one of {types} in the pipeline, found {[t['type'] for t in pipeline]}")
    return found[0]


def _resize(step: dict[str, Any]) -> str:
    if step["type"] == "RandomResize":  # a short side drawn uniformly between two scales
        (low, high) = sorted(min(s) for s in step["scale"])
        return f"short side {low}–{high} (uniform range), long side ≤ {max(max(s) for s in step['scale'])}"
    scales = [step["scale"]] if step["type"] == "Resize" else step["scales"]
    longs, shorts = {max(s) for s in scales}, [min(s) for s in scales]
    sampling = " (one per image)" if len(scales) > 1 else ""
    return f"short side {_sizes(shorts)}{sampling}, long side ≤ {max(longs)}"


def mmdet_settings(schedule: str) -> dict[str, str]:
    from benchmarks.frameworks.openmmlab import load_config

    cfg = load_config("mmdet", "mask_rcnn_r50_fpn", schedule)
    model, optim = cfg.model, cfg.optim_wrapper
    train, test = cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline
    flip = _transform(train, "RandomFlip")
    warmup, steps = (next(p for p in cfg.param_scheduler if p["type"] == kind) for kind in ("LinearLR", "MultiStepLR"))
    paramwise = optim.get("paramwise_cfg") or {}
    decay = optim.optimizer.weight_decay
    bbox_head, mask_head, rcnn_test = model.roi_head.bbox_head, model.roi_head.mask_head, model.test_cfg.rcnn
    anchors = model.rpn_head.anchor_generator
    rpn_train, rpn_test = model.train_cfg.rpn_proposal, model.test_cfg.rpn
    return {
        "train input": _resize(_transform(train, "Resize", "RandomChoiceResize", "RandomResize")),
        "train flip": f"horizontal, p {flip['prob']:g}" if flip.get("direction", "horizontal") == "horizontal"
        else str(flip),
        "test input": _resize(_transform(test, "Resize")),
        "global batch": str(cfg.global_batch_size),
        "optimizer": f"{optim.optimizer.type}, momentum {optim.optimizer.momentum}"
                     + (", nesterov" if optim.optimizer.get("nesterov") else ""),
        "lr": f"{optim.optimizer.lr:g}",
        "weight decay": f"{decay:g}, norm layers {decay * paramwise.get('norm_decay_mult', 1.0):g}, biases "
                        f"{decay * paramwise.get('bias_decay_mult', 1.0):g}",
        "warmup": f"linear, {warmup['end']} iterations from {warmup['start_factor']:g}",
        "schedule": f"{cfg.train_cfg.max_epochs} epochs, x{steps['gamma']:g} after epochs "
                    f"{', '.join(map(str, steps['milestones']))}",
        "norm: backbone / FPN / box head / mask head":
            " / ".join((part.get("norm_cfg") or {}).get("type", "none")
                       for part in (model.backbone, model.neck, bbox_head, mask_head)),
        # frozen_stages: 0 freezes the stem, 1 the stem and the first stage, ...
        "frozen backbone stages": _frozen(model.backbone.frozen_stages + 1),
        "BN statistics": f"trained ({model.backbone.norm_cfg.type})" if not model.backbone.norm_eval
        else "frozen (norm_eval)",
        "box head": f"{bbox_head.num_shared_convs} conv + {bbox_head.num_shared_fcs} fc"
        if "num_shared_convs" in bbox_head else SHARED_HEADS.get(bbox_head.type, bbox_head.type),
        "mask head": f"{mask_head.num_convs} conv",
        "anchors": f"sizes {', '.join(str(anchors.scales[0] * s) for s in anchors.strides)}, ratios "
                   f"{', '.join(f'{r:g}' for r in anchors.ratios)}",
        "RPN proposals train / test": f"{rpn_train.nms_pre} → {rpn_train.max_per_img} / {rpn_test.nms_pre} → "
                                      f"{rpn_test.max_per_img}, NMS {rpn_test.nms.iou_threshold:g}",
        "RoIs sampled per image": f"{model.train_cfg.rcnn.sampler.num}, {model.train_cfg.rcnn.sampler.pos_fraction:g}"
                                  " positive",
        "test detections": f"≤ {rcnn_test.max_per_img} per image, score ≥ {rcnn_test.score_thr:g}, NMS "
                           f"{rcnn_test.nms.iou_threshold:g}",
        "AMP": "on" if optim.type == "AmpOptimWrapper" else "off",
        "gradient clipping": "on" if optim.get("clip_grad") else "off",
    }


def comparison(schedule: str = "1x") -> list[tuple[str, str, str, str]]:
    """(setting, Detectron2, MMDetection, 'same' or the justification) for every setting."""
    ours, theirs = detectron2_settings(schedule), mmdet_settings(schedule)
    if set(ours) != set(theirs):
        raise ValueError(f"settings read from one framework only: {sorted(set(ours) ^ set(theirs))}")
    return [(key, ours[key], theirs[key], "same" if ours[key] == theirs[key] else JUSTIFIED.get(key, "DIFFERENT"))
            for key in ours]


def markdown(schedule: str = "1x") -> str:
    lines = [f"| setting ({schedule}) | Detectron2 | MMDetection | |", "|---|---|---|---|"]
    lines += [f"| {key} | {d2} | {mm} | {note} |" for key, d2, mm, note in comparison(schedule)]
    return "\n".join(lines)
