"""Convert one source checkpoint into the requested targets, verify, and describe the result in a JSON sidecar.

Nothing half-done is left behind: each file is written under a temporary name and renamed only after
it was written (and, with verification, only after it reproduced the source). A target that fails
leaves no file, and files from earlier exports are only replaced by a verified new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from pretrain.checkpoint import sha256_of, utc_now
from pretrain.errors import UserError
from pretrain.files import atomic_path, atomic_write_json
from transfer.detectron2 import DETECTRON2
from transfer.openmmlab import MMDET, MMSEG
from transfer.source import SourceBackbone, read_backbone

SIDECAR_SUFFIX = ".transfer.json"


class Target(Protocol):
    name: str

    @property
    def suffix(self) -> str: ...
    def settings(self, source: SourceBackbone) -> dict[str, Any]: ...
    def payload(self, source: SourceBackbone, meta: dict[str, Any]) -> dict[str, Any]: ...
    def write(self, obj: dict[str, Any], path: Path) -> None: ...
    def verify(self, source: SourceBackbone, path: Path) -> dict[str, float]: ...


TARGETS: dict[str, Target] = {"detectron2": DETECTRON2, "mmdet": MMDET, "mmseg": MMSEG}


def parse_targets(spec: str) -> list[str]:
    names = list(TARGETS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise UserError(f"unknown target '{','.join(unknown) or spec}'; choose from {', '.join(TARGETS)} or all")
    return names


def source_summary(source: SourceBackbone) -> dict[str, Any]:
    return {
        "path": str(source.path), "sha256": sha256_of(source.path) if source.path else None,
        "flavour": source.flavour, "arch": source.arch, "stem": source.stem, "method": source.meta.get("method"),
        "dropped": source.dropped, "input": source.input, "input_recorded": source.input_recorded,
        "recipe": pretraining_recipe(source.meta), "pretrain_seed": pretraining_seed(source.meta),
    }


def pretraining_seed(meta: dict[str, Any]) -> int | None:
    """The seed this suite's pretraining ran with (what pairs two methods' checkpoints); None: not recorded."""
    seed = ((meta.get("config") or {}).get("train") or {}).get("seed") if meta.get("dataset") else None
    return None if seed is None else int(seed)


def pretraining_recipe(meta: dict[str, Any]) -> str | None:
    """How the backbone was pretrained, in one line (only this suite's checkpoints record it)."""
    if not meta.get("dataset"):
        return None
    config = meta.get("config") or {}
    parts = [f"{meta['dataset']} {meta.get('epochs', '?')} ep"]
    if meta.get("stem", "imagenet") != "imagenet":
        parts.append(f"{meta['stem']} stem")
    if "seed" in config.get("train", {}):
        parts.append(f"seed {config['train']['seed']}")
    if config.get("name"):
        parts.append(f"config {config['name']} ({meta.get('config_hash', '?')})")
    spikes = (meta.get("training") or {}).get("loss_spikes")
    if spikes is not None:  # recorded since the spike detector exists; a damaged run must not pass unseen
        parts.append(f"{spikes} loss spike{'s' if spikes != 1 else ''}" + (" (!)" if spikes else ""))
    return ", ".join(parts)


def check_exportable(source: SourceBackbone, targets: list[str]) -> None:
    """Refuse, in one line, a backbone that the targets' ResNets cannot hold."""
    if source.stem != "imagenet":
        raise UserError(f"{source.path}: a {source.stem}-stem backbone (3x3 stride-1 conv1, no max-pool) cannot "
                        f"go to {', '.join(targets)}: their ResNets have the ImageNet stem (7x7 stride-2 conv1 and "
                        "a max-pool); evaluate it with the probe (python -m benchmarks run probe)")


def export(checkpoint: str | Path | SourceBackbone, targets: list[str], out_dir: str | Path, verify: bool
           ) -> dict[str, Any]:
    """Convert `checkpoint` (a path, or a backbone already read from one) into each target under `out_dir`;
    returns (and writes) the sidecar record."""
    source = checkpoint if isinstance(checkpoint, SourceBackbone) else read_backbone(checkpoint)
    check_exportable(source, targets)
    checkpoint = source.path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(checkpoint).name.split(".")[0]
    record: dict[str, Any] = {
        "created": utc_now(),
        "source": source_summary(source), "targets": {},
    }
    sidecar = out_dir / f"{stem}{SIDECAR_SUFFIX}"
    if sidecar.is_file():  # keep what earlier exports of other targets recorded
        record["targets"] = json.loads(sidecar.read_text()).get("targets", {})
    for name in targets:
        target = TARGETS[name]
        final = out_dir / f"{stem}{target.suffix}"
        meta = {"source": record["source"], "target": name, "settings": target.settings(source)}
        with atomic_path(final) as tmp:  # verified before it takes the final name
            target.write(target.payload(source, meta), tmp)
            errors = target.verify(source, tmp) if verify else None
        record["targets"][name] = {"file": final.name, "sha256": sha256_of(final), "settings": meta["settings"],
                                   "verified": errors is not None, "max_relative_error": errors}
    atomic_write_json(sidecar, record)
    return record


def load_settings(sidecar: str | Path, target: str) -> dict[str, Any]:
    """The framework settings an export recorded for `target` (what the benchmark configs apply)."""
    record = json.loads(Path(sidecar).read_text())
    if target not in record.get("targets", {}):
        raise UserError(f"{sidecar} has no '{target}' export; run python -m transfer export ... --to {target}")
    return record["targets"][target]["settings"]
