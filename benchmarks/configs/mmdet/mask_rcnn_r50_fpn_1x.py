# COCO Mask R-CNN R50-FPN, 1x (12 epochs, 16 images/batch, lr 0.02, steps after epochs 8 and 11), the
# transfer protocol over mmdet's own config: SyncBN in backbone, FPN and heads (4conv1fc box head),
# no frozen stages, BN statistics trained. The runner fills in the pretrained backbone (init_cfg),
# its depth and channels, the data preprocessor and the dataset, from the converted checkpoint's metadata.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Evaluate once, after training (as the Detectron2 benchmark does), with CocoMetric (pycocotools).
train_cfg = dict(val_interval=12)
