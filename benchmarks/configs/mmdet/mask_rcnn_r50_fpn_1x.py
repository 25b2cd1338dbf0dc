# COCO Mask R-CNN R50-FPN, 1x: MMDetection's own transfer protocol for self-supervised backbones, its packaged
# `selfsup_pretrain/mask-rcnn_r50-mocov2-pre_fpn_1x_coco.py` (results in mmdetection's
# configs/selfsup_pretrain/README.md): SyncBN in the backbone with its statistics trained, the stem frozen
# (frozen_stages=0), FPN and heads as mmdet's Mask R-CNN, single-scale training (1333 x 800), 12 epochs at
# 16 images a batch, lr 0.02, steps after epochs 8 and 11. `python -m benchmarks protocols` compares it with
# that config key by key. The runner fills in the pretrained backbone (init_cfg), its depth and channels,
# the data preprocessor and the dataset, from the converted checkpoint's metadata.
_base_ = 'mmdet::selfsup_pretrain/mask-rcnn_r50-mocov2-pre_fpn_1x_coco.py'

# The protocol's batch over all processes; the runner sets train_dataloader.batch_size to
# global_batch_size / processes (mmdet's packaged value, 2, assumed 8 GPUs).
global_batch_size = 16

# Evaluate once, after training (as the Detectron2 benchmark does), with CocoMetric (pycocotools).
train_cfg = dict(val_interval=12)
