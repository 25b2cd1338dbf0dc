"""What MoCo's published Detectron2 numbers ran on, shared by the two Detectron2 references (COCO R50-FPN, VOC07+12
R50-C4): the pinned files, and what the Detectron2 and fvcore of those runs built.

MoCo's detection numbers come from 2019-2020 (MoCo v1: arXiv 1911.05722, 2019-11; MoCo v2: arXiv 2003.04297,
2020-03; detection/README.md since facebookresearch/moco's first commit 90e244a, 2020-03-22). facebookresearch/moco's
default branch is empty today; its files exist at commits up to 132aea9, the pin here. The Detectron2 of those
runs predates 02478d2e (2020-04-15), before which the config string "SyncBN" built Detectron2's
NaiveSyncBatchNorm (torch's SyncBatchNorm since), and the fvcore predates d3b3b12 (2021-05-17), before which precise
BN was the equal-weight mean of the batch statistics. The model-zoo files the references start from are byte for
byte the same at detectron2 f266979 (2020-04-15, the parent of 02478d2e) as in the Detectron2 installed here
(their blob ids; tests/test_protocol.py holds the installed copies to them).
"""

from __future__ import annotations

from benchmarks.reference import Pin

MOCO = "facebookresearch/moco"
MOCO_COMMIT = "132aea9"
DETECTRON2_THEN = "f266979"  # detectron2 on 2020-04-15, the last commit before "SyncBN" built torch's layer


def moco_file(path: str, blob: str) -> Pin:
    return Pin(MOCO, MOCO_COMMIT, path, blob)


def zoo_file(path: str, blob: str) -> Pin:
    return Pin("facebookresearch/detectron2", DETECTRON2_THEN, f"configs/{path}", blob,
               installed=f"detectron2:model_zoo/configs/{path}")


# Detectron2's config defaults of that time, dumped from detectron2@f266979's defaults.py: the MoCo references
# start from them, so that a default changed since shows as a difference
DEFAULTS = "detectron2/defaults_f266979.yaml"
DEFAULTS_SOURCE = Pin("facebookresearch/detectron2", DETECTRON2_THEN, "detectron2/config/defaults.py",
                      "a397a6fbef36e188a676ad52f34309c42877ba1e")

SAME_AS_BEFORE = "added to Detectron2's defaults after 2020-04; its default is what Detectron2 did before: "
UNUSED = "added to Detectron2's defaults after 2020-04, for a part these protocols do not use: "
# every default added or changed since those defaults, and why it changes nothing here (read in today's detectron2)
SINCE_THEN = {
    "INPUT.RANDOM_FLIP": SAME_AS_BEFORE + "a horizontal flip in training",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": SAME_AS_BEFORE + "smooth L1",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": SAME_AS_BEFORE + "weight 1",
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": SAME_AS_BEFORE + "smooth L1",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": SAME_AS_BEFORE + "weight 1",
    "MODEL.RPN.CONV_DIMS": SAME_AS_BEFORE + "one 3x3 conv as wide as its input",
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": SAME_AS_BEFORE + "softmax cross-entropy over all classes",
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": SAME_AS_BEFORE + "softmax cross-entropy over all classes",
    "SOLVER.AMP.ENABLED": SAME_AS_BEFORE + "fp32 training",
    "SOLVER.NESTEROV": SAME_AS_BEFORE + "plain SGD momentum",
    "SOLVER.REFERENCE_WORLD_SIZE": SAME_AS_BEFORE + "0, no rescaling of batch and lr with the GPU count",
    "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER": UNUSED + "the federated loss (off)",
    "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES": UNUSED + "the federated loss (off)",
    "DATALOADER.REPEAT_SQRT": UNUSED + "RepeatFactorTrainingSampler",
    "MODEL.RETINANET": UNUSED + "RetinaNet",
    "SOLVER.BASE_LR_END": UNUSED + "the cosine schedule",
    "SOLVER.NUM_DECAYS": UNUSED + "WarmupStepWithFixedGammaLR",
    "SOLVER.RESCALE_INTERVAL": UNUSED + "WarmupStepWithFixedGammaLR",
    "SOLVER.WEIGHT_DECAY_BIAS": "None now means the weight decay, 0.0001, the value it had; norm layers' biases take "
                                "WEIGHT_DECAY_NORM in both",
}

README = moco_file("detection/README.md", "d5bd80c58cca99b87cee545ef16626478d741eb2")

BUILT_SOURCE = ("Detectron2 before 02478d2e (2020-04-15) and fvcore before d3b3b12 (2021-05-17), which MoCo's numbers "
                "(2019-2020) ran: benchmarks/moco_reference.py")
NAIVE = "NaiveSyncBatchNorm"
ESTIMATOR_THEN = "equal-weight mean of the per-batch means and variances (fvcore up to d3b3b12, e.g. 96ee7f1)"
BUILT = {
    "norm layers: backbone": NAIVE,
    "precise BN: estimator": ESTIMATOR_THEN,
    "precise BN: across ranks": "each rank alone (fvcore's update_bn_stats)",
    "train resize": "ResizeShortestEdge, PIL bilinear",
    "framework": "detectron2 of 2019-2020 (before 02478d2e)",
}
BUILT_DIFFERENCES = {
    "precise BN: across ranks": "with the synchronised layers of these protocols every rank's estimate is already the "
                                "same, so the average changes nothing; with plain BN it makes the buffers, hence the "
                                "score, independent of the GPU count",
    "framework": "the release installed here (sal-detectron2, a republish of upstream's code); what changed since in "
                 "what these protocols build is matched row by row above, and the model-zoo files are identical",
}
EVALUATES_ONCE = ("evaluates once, after training. The reference's intermediate evaluations change no setting of "
                  "the protocol, but before each one precise BN runs the model in training mode on batches of a new "
                  "loader, drawing from the global random generators (torch.randperm in the RoI sampler, the new "
                  "sampler's seed): the final model is another draw from the same distribution, not the same model")
