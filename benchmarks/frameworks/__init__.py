"""The frameworks the benchmarks fine-tune in: Detectron2 (`detectron2_train` and its COCO and VOC07+12
protocols), OpenMMLab (`openmmlab` and its MMDetection and MMSegmentation protocols), the frozen-feature
probe, and what they share (CPU stand-ins for CUDA-only pieces, precise BN combined over the ranks)."""
