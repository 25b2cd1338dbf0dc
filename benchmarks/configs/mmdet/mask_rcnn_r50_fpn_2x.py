# COCO Mask R-CNN R50-FPN, 2x: MMDetection's packaged `selfsup_pretrain/mask-rcnn_r50-mocov2-pre_fpn_ms-2x_coco.py`
# (results in mmdetection's configs/selfsup_pretrain/README.md): as the 1x protocol, with multi-scale training
# (short side drawn from 640-800, long side <= 1333) and 24 epochs, steps after epochs 16 and 22.
_base_ = 'mmdet::selfsup_pretrain/mask-rcnn_r50-mocov2-pre_fpn_ms-2x_coco.py'

# The protocol's batch over all processes (mmdet's packaged 2 a GPU, assumed 8 GPUs).
global_batch_size = 16

# Evaluate once, after training.
train_cfg = dict(val_interval=24)
