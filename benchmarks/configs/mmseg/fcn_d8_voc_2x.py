# PASCAL VOC 2012 + aug, FCN-D8, 40k iterations (mmseg's longer VOC schedule); otherwise as 1x.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-40k_voc12aug-512x512.py'

# The protocol's batch over all processes (mmseg's packaged 4 GPUs x 4); the runner sets
# train_dataloader.batch_size to global_batch_size / processes.
global_batch_size = 16
