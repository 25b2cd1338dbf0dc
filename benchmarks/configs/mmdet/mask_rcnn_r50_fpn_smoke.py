# Smoke schedule: the 1x model on the embedded COCO-format data, sized for 2 CPU cores (minutes):
# 128 px images, batch 2, 10 iterations, no worker processes. Its numbers are never benchmark results.
_base_ = './mask_rcnn_r50_fpn_1x.py'

global_batch_size = 2

# 128 px images hold at most 3 objects: fewer proposals and sampled RoIs than for 800 px COCO.
model = dict(
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rpn_proposal=dict(nms_pre=600, max_per_img=300),
                   rcnn=dict(sampler=dict(num=32))),
    # every detection kept: a model 10 iterations old may score none above 0.05, and an evaluation of nothing is
    # no check of the pipeline; up to 20 an image (not 100), since the mask head runs on each and an image holds
    # at most 3 objects (with 100, the mask head was three quarters of the evaluation)
    test_cfg=dict(rpn=dict(nms_pre=600, max_per_img=300), rcnn=dict(score_thr=0.0, max_per_img=20)))

_pipeline_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=_pipeline_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=_pipeline_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=10, val_interval=10)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', begin=0, end=10, by_epoch=False, milestones=[8], gamma=0.1),
]
# the protocol's lr scaled to the smoke's batch (0.02 x 2 / 16): 4x that diverged within 10 iterations
optim_wrapper = dict(optimizer=dict(lr=0.0025))
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(by_epoch=False, interval=5))
log_processor = dict(by_epoch=False)
