"""What every target's verification shares: random input, reference stage features, the comparison."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pretrain.errors import UserError
from transfer.source import SourceBackbone, reference_model, reference_stage_features

STAGES = ("res2", "res3", "res4", "res5")
TOLERANCE = 1e-5  # max |target - source| relative to max |source|, per stage


class VerificationError(UserError):
    """The converted file does not reproduce the source backbone in the target framework."""


def random_images(seed: int = 0, size: int = 96) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def source_features(source: SourceBackbone, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return reference_stage_features(reference_model(source), images)


def compare_features(target: str, reference: Sequence[torch.Tensor], got: Sequence[torch.Tensor]) -> dict[str, float]:
    """Relative max error per stage; raises if a stage differs beyond TOLERANCE or in shape."""
    errors = {}
    for name, want, have in zip(STAGES, reference, got, strict=True):
        if want.shape != have.shape:
            raise VerificationError(f"{target}: stage {name} has shape {tuple(have.shape)}, source {tuple(want.shape)}")
        errors[name] = float((want - have).abs().max() / want.abs().max().clamp_min(1e-12))
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    if bad:
        shown = ", ".join(f"{k} {v:.2e}" for k, v in bad.items())
        raise VerificationError(f"{target}: feature maps differ from the source beyond {TOLERANCE:g}: {shown}")
    return errors


def require_loaded(target: str, missing: Sequence[str], unused: Sequence[str], wrong: Sequence[str] = ()) -> None:
    problems = []
    if missing:
        problems.append(f"target tensors left uninitialised: {', '.join(sorted(missing)[:10])}")
    if unused:
        problems.append(f"converted tensors not used by the target: {', '.join(sorted(unused)[:10])}")
    if wrong:
        problems.append(f"shape mismatches: {', '.join(sorted(wrong)[:10])}")
    if problems:
        raise VerificationError(f"{target}: " + "; ".join(problems))
