# ADE20K, UPerNet, 160k iterations (mmseg's longer ADE20K schedule); otherwise as 1x.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'

# The protocol's batch over all processes (mmseg's packaged 4 GPUs x 4); the runner sets
# train_dataloader.batch_size to global_batch_size / processes.
global_batch_size = 16

model = dict(backbone=dict(frozen_stages=-1, norm_eval=False))
