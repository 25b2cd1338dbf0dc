"""What a protocol builds, beyond what its config strings say: the semantics its published numbers depend on.

The same config string can build another layer in another framework version ("SyncBN" built Detectron2's
NaiveSyncBatchNorm before detectron2 02478d2e, 2020-04-15, and torch's SyncBatchNorm after), and some
semantics are not in a config at all (the precise-BN estimator, the image resize backend). A reference
declares what it built, with the framework of its time (`Reference.built`); each framework adapter reports
what our protocol builds, from the model it constructs and the transforms it resolves; `python -m benchmarks
protocols` prints both, and a difference without a one-line reason (`Reference.built_differences`) fails
the tests, as a key difference does (`benchmarks.reference.compare_built`).
"""

from __future__ import annotations

from torch import nn

# the aspects every report lists, in this order (a protocol reports those that apply to its model)
ASPECTS = ("norm layers: backbone", "norm layers: FPN", "RoI heads", "norm layers: RoI head (res5)",
           "norm layers: box head", "norm layers: mask head", "segmentor", "norm layers: decode head",
           "norm layers: auxiliary head", "precise BN: estimator", "precise BN: across ranks", "train resize",
           "framework")
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_classes(module: nn.Module, leave_out: nn.Module | None = None) -> str:
    """The classes of the normalisation layers in `module` (those of `leave_out` not counted), or "none"."""
    skipped = {id(m) for m in leave_out.modules()} if leave_out is not None else set()
    names = sorted({type(m).__name__ for m in module.modules() if id(m) not in skipped
                    and (isinstance(m, NORMS) or type(m).__name__ == "FrozenBatchNorm2d")})
    return ", ".join(names) or "none"
