"""Pretraining stage: SL, SL-MLP and LOOK backbones."""
