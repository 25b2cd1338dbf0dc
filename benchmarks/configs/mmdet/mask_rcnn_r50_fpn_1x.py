# COCO Mask R-CNN R50-FPN, 1x (12 epochs, 16 images/batch, lr 0.02, steps after epochs 8 and 11), the
# transfer protocol over mmdet's own config, made the same protocol as the Detectron2 benchmark (see
# `python -m benchmarks protocols`): SyncBN in backbone, FPN and heads (4conv1fc box head), no frozen
# stages, BN statistics trained, multi-scale training (short side 640-800), no weight decay on norm
# layers, 1000 warmup iterations. The runner fills in the pretrained backbone (init_cfg), its depth and
# channels, the data preprocessor and the dataset, from the converted checkpoint's metadata.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

# The protocol's batch over all processes; the runner sets train_dataloader.batch_size to
# global_batch_size / processes (mmdet's packaged value, 2, assumed 8 GPUs).
global_batch_size = 16

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Detectron2's model-zoo input: a short side of 640, 672, ..., 800 drawn per image, long side <= 1333.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(1333, s) for s in range(640, 801, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# Detectron2's solver: no weight decay on norm layers, 1000 linear warmup iterations.
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

# Evaluate once, after training (as the Detectron2 benchmark does), with CocoMetric (pycocotools).
train_cfg = dict(val_interval=12)
