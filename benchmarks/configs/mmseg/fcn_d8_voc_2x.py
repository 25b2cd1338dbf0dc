# PASCAL VOC 2012 + aug, FCN-D8, 40k iterations (mmseg's longer VOC schedule); otherwise as 1x.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-40k_voc12aug-512x512.py'

model = dict(backbone=dict(frozen_stages=-1, norm_eval=False))
