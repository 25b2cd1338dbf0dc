# PASCAL VOC 2012 + aug semantic segmentation: FCN with a dilated (output stride 8) ResNet, 512x512 crops,
# 4 GPUs x 4 images, 20k iterations, SGD lr 0.01 poly: mmseg's own protocol (SyncBN, nothing frozen, BN
# statistics trained), on a plain-stem ResNet as MMSelfSup's VOC12aug benchmark runs it. The runner swaps
# mmseg's deep-stem ResNetV1c for the plain ResNet our weights fit, points init_cfg at the converted
# checkpoint, and sets the heads' input channels for its depth. `python -m benchmarks protocols` compares it
# with MMSelfSup's config key by key.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py'

# The protocol's batch over all processes (mmseg's packaged 4 GPUs x 4); the runner sets
# train_dataloader.batch_size to global_batch_size / processes.
global_batch_size = 16
