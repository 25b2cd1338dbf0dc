# ADE20K semantic segmentation: UPerNet on a ResNet (output stride 32), 512x512 crops, 4 GPUs x 4 images,
# 80k iterations, SGD lr 0.01 poly: mmseg's own protocol. SyncBN, no frozen stages, BN statistics trained.
# The runner swaps mmseg's deep-stem ResNetV1c for the plain ResNet our weights fit.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'

# The protocol's batch over all processes (mmseg's packaged 4 GPUs x 4); the runner sets
# train_dataloader.batch_size to global_batch_size / processes.
global_batch_size = 16

model = dict(backbone=dict(frozen_stages=-1, norm_eval=False))
