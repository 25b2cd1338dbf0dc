"""Checkpoints: atomic writes, weights-only loading, and the exported backbone file.

A training checkpoint holds only tensors and plain Python values, so it loads with
`torch.load(weights_only=True)`, like anything read from outside.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from pretrain.errors import UserError
from pretrain.files import atomic_path

CHECKPOINT_FORMAT = "transfer-bench/pretrain-checkpoint"
BACKBONE_FORMAT = "transfer-bench/backbone"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically (pretrain.files): never a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def load_weights(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; any failure is one clear UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise UserError(
                f"{path} is not a weights-only checkpoint: it pickles the Python object {found.group(1)}, "
                "which is refused (unpickling can run code)"
            ) from None
        raise UserError(f"cannot read checkpoint {path}: not a PyTorch weights file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot read checkpoint {path}: {str(e).strip().splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a dict of weights (got {type(obj).__name__})")
    return obj


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    checkpoint = load_weights(path)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a pretraining checkpoint of this suite (no '{CHECKPOINT_FORMAT}' format tag)")
    return checkpoint


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_backbone(state_dict: dict[str, torch.Tensor], meta: dict[str, Any], out_dir: Path) -> Path:
    """Write `{state_dict, meta}` as `<stem>-<sha256[:8]>.pth` (the hash covers the file's bytes)."""
    meta = {
        "format": BACKBONE_FORMAT,
        "format_version": FORMAT_VERSION,
        "created": utc_now(),
        "torch_version": str(torch.__version__),
        **meta,
    }
    stem = f"{meta['method']}_{meta['arch']}_{meta['dataset']}_ep{meta['epochs']}"
    tmp = out_dir / f"{stem}.pth.partial"
    atomic_save({"state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, "meta": meta}, tmp)
    final = out_dir / f"{stem}-{sha256_of(tmp)[:8]}.pth"
    os.replace(tmp, final)
    return final
