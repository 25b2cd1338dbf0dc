"""Transfer stage: convert pretrained backbones into Detectron2 and OpenMMLab checkpoints."""
