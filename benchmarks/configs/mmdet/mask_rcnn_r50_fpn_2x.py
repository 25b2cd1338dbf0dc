# COCO Mask R-CNN R50-FPN, 2x (24 epochs, steps after epochs 16 and 22); otherwise as the 1x protocol.
_base_ = './mask_rcnn_r50_fpn_1x.py'

train_cfg = dict(max_epochs=24, val_interval=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
