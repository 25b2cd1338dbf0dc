# Smoke schedule for the VOC protocol: the 1x model on the embedded VOC-format data.
_base_ = './fcn_d8_voc_1x.py'

global_batch_size = 2

# Sized for 2 CPU cores (minutes) on the embedded data: 96x96 crops of ~128 px images, batch 2,
# 10 iterations, one evaluation at the end, no worker processes. Never a benchmark result.
crop_size = (96, 96)
_scale = (160, 96)
model = dict(data_preprocessor=dict(size=crop_size))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=10, val_interval=10)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=10, by_epoch=False)]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(by_epoch=False, interval=5))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# mmengine replaces lists whole: both parts of the train set (VOC train + SBD aug) as in the base.
_voc_parts = [('SegmentationClass', 'train'), ('SegmentationClassAug', 'aug')]
train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(datasets=[
    dict(type='PascalVOCDataset', data_prefix=dict(img_path='JPEGImages', seg_map_path=labels),
         ann_file=f'ImageSets/Segmentation/{split}.txt', pipeline=train_pipeline)
    for labels, split in _voc_parts]))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
