"""Caffe2-format ImageNet ResNets (Detectron2's `ImageNetPretrained/MSRA/R-50.pkl`, the supervised backbone
MoCo's VOC and COCO baselines start from), read as a timm-layout backbone with their own conventions.

The file is a Python 2 pickle of `{blob name: numpy array}`: `conv1_w`, `res_conv1_bn_{s,b}` and
`res{2-5}_{i}_branch{1,2a,2b,2c}_{w,bn_s,bn_b}` (one explicit key map below), `fc1000_{w,b}`. Three things
differ from a torchvision ResNet, and each is carried, not approximated:
- the stride of a downsampling bottleneck sits in its first 1x1 convolution (`stride_in_1x1`: Detectron2's
  `STRIDE_IN_1X1`, OpenMMLab's `style='caffe'`);
- BN is frozen into an affine (`_s`, `_b`): it becomes BN with mean 0 and variance 1 - eps, which computes
  exactly `s * x + b`;
- input: BGR on the 0-255 scale, minus the per-channel means 103.53, 116.28, 123.675, std 1.
Unpickling admits numpy arrays and plain containers only (the file comes from outside).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretrain.errors import UserError

BN_EPS = 1e-5  # what timm's, Detectron2's and OpenMMLab's BatchNorm use
CAFFE_INPUT = {"channel_order": "BGR", "pixel_range": [0, 255], "mean": [103.53, 116.28, 123.675],
               "std": [1.0, 1.0, 1.0]}

_PART = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
# caffe2 blob name -> timm / torchvision name; None: left out on purpose (the classifier)
KEY_MAP: list[tuple[str, Callable[[re.Match], str] | None]] = [
    (r"conv1_w", lambda m: "conv1.weight"),
    (r"res_conv1_bn_(s|b|rm|riv)", lambda m: f"bn1.{_PART[m[1]]}"),
    (r"res(\d)_(\d+)_branch2([abc])_w", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{'abc'.index(m[3]) + 1}.weight"),
    (r"res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)",
     lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{'abc'.index(m[3]) + 1}.{_PART[m[4]]}"),
    (r"res(\d)_(\d+)_branch1_w", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (r"res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1.{_PART[m[3]]}"),
    (r"fc1000_[wb]", None),
]


class _ArraysOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
               ("_codecs", "encode")}  # how Python 3 pickles bytes at protocol 2

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: the pickle names {module}.{name}")
        return super().find_class(module, name)


def is_caffe2_pickle(path: Path) -> bool:
    return path.suffix == ".pkl"


def read_blobs(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            blobs = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"cannot read {path} as a caffe2 weights pickle: {e}") from None
    if isinstance(blobs, dict) and isinstance(blobs.get("blobs"), dict):  # a detection model's layout
        blobs = blobs["blobs"]
    if not isinstance(blobs, dict) or "conv1_w" not in blobs:
        raise UserError(f"{path}: not caffe2 ImageNet ResNet weights (no conv1_w blob)")
    return blobs


def timm_state(blobs: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The blobs under timm's names, frozen BN as BN with mean 0 and variance 1 - eps; and what was dropped."""
    import numpy as np

    state: dict[str, torch.Tensor] = {}
    dropped = []
    for name, value in blobs.items():
        if name.endswith("_momentum") or not isinstance(value, np.ndarray):
            continue  # optimizer state and bookkeeping, not weights
        for pattern, rename in KEY_MAP:
            match = re.fullmatch(pattern, name)
            if match:
                if rename is None:
                    dropped.append("fc1000")
                else:
                    state[rename(match)] = torch.from_numpy(np.ascontiguousarray(value)).float()
                break
        else:
            raise UserError(f"{path}: no key-map rule for caffe2 blob '{name}'")
    for weight in [k for k in state if re.fullmatch(r"(bn1|layer\d\.\d+\.(bn\d|downsample\.1))\.weight", k)]:
        prefix = weight[:-len("weight")]
        state.setdefault(prefix + "running_mean", torch.zeros_like(state[weight]))
        state.setdefault(prefix + "running_var", torch.full_like(state[weight], 1.0 - BN_EPS))
        state.setdefault(prefix + "num_batches_tracked", torch.tensor(0))
    return state, sorted(set(dropped))


def caffe2_blobs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A timm ResNet state dict as caffe2 blobs, each BN folded into its affine (`_s`, `_b`): the layout of
    MSRA's files, for stand-ins and tests."""
    import numpy as np

    inverse = {"conv1.weight": "conv1_w"}
    for key in state:
        found = re.fullmatch(r"layer(\d)\.(\d+)\.(conv(\d)|downsample\.0)\.weight", key)
        if found:
            block = f"res{int(found[1]) + 1}_{found[2]}"
            inverse[key] = f"{block}_branch2{'abc'[int(found[4]) - 1]}_w" if found[4] else f"{block}_branch1_w"
    blobs: dict[str, Any] = {}
    for key, name in inverse.items():
        blobs[name] = state[key].numpy().astype(np.float32)
        # the BN after this convolution: bn1, layerX.i.bnK, layerX.i.downsample.1
        norm = "bn1." if key == "conv1.weight" else \
            key.replace(".conv", ".bn").replace(".downsample.0", ".downsample.1").removesuffix("weight")
        scale = state[norm + "weight"] / torch.sqrt(state[norm + "running_var"] + BN_EPS)
        shift = state[norm + "bias"] - state[norm + "running_mean"] * scale
        prefix = "res_conv1_bn" if key == "conv1.weight" else name[:-2] + "_bn"
        blobs[prefix + "_s"], blobs[prefix + "_b"] = scale.numpy(), shift.numpy()
    if "fc.weight" in state:
        blobs["fc1000_w"], blobs["fc1000_b"] = state["fc.weight"].numpy(), state["fc.bias"].numpy()
    return blobs
