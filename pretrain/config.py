"""Typed run configuration: YAML files and `--set key=value` overrides, validated against dataclasses.

Every key is declared here (or, for `method`, by the registered method's `Params`), so a typo is an
error naming the key instead of a silently ignored setting. Each run writes its resolved config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pretrain.errors import UserError
from pretrain.files import atomic_write_text
from pretrain.methods import resolve_method_params
from pretrain.schema import build_dataclass

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class GeneratedDataConfig:
    """The embedded dataset: every class is a union of visually distinct sub-modes."""

    num_classes: int = 8
    modes_per_class: int = 4
    train_per_mode: int = 24
    val_per_mode: int = 8
    image_size: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    # ImageNet-layout folder (root/<class>/<image>); null means the embedded generated dataset.
    root: str | None = None
    # Optional CSV `fine,coarse`: train on the coarse class of each fine class folder (coarse-to-fine).
    coarse_map: str | None = None
    generated: GeneratedDataConfig = field(default_factory=GeneratedDataConfig)
    generated_dir: str = "data/generated"
    image_size: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    workers: int = 8
    # Decode the training images once into one tensor on the device and augment there (small images of one
    # size: no decoding or worker processes per step); the same crops and flips by distribution, other draws.
    in_memory: bool = False
    # Where the training JPEGs are decoded and augmented: `pil` in the loader's worker processes (any image
    # format, any machine), `gpu` on the training GPU (torchvision's nvjpeg decoder; workers only read the
    # files), with the same samples, labels and crop distributions. Without a CUDA device the file path runs.
    decoder: typing.Literal["pil", "gpu"] = "pil"


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    # imagenet: the ResNet's own 7x7 stride-2 stem and max-pool (what detection and segmentation need);
    # small: 3x3 stride 1, no max-pool, for 32-64 px images (probe only: the frameworks' ResNets cannot take it)
    stem: str = "imagenet"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | lars | adamw
    # The learning rate for 256 images: the run uses lr_per_256 * train.batch_size / 256 (the linear
    # scaling rule), so a recipe means the same protocol at any batch size and on any number of GPUs.
    lr_per_256: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    # BN and bias parameters get no weight decay (and no LARS adaptation) when true.
    no_decay_norm_bias: bool = False


@dataclass
class ScheduleConfig:
    epochs: int = 100
    warmup_epochs: float = 5.0
    min_lr_ratio: float = 0.0  # cosine ends at peak lr * min_lr_ratio


@dataclass
class TrainConfig:
    batch_size: int = 256  # global, split evenly over the processes
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # auto: bf16 on a CUDA card with native bf16, else fp16 with a grad scaler; off on cpu | bf16 | fp16 | off
    amp: str = "auto"
    channels_last: str = "auto"  # auto (on cuda) | on | off
    sync_bn: bool = False  # SyncBatchNorm under DDP (cuda only)
    log_every: int = 10
    save_every_steps: int = 0  # also write `last` every N steps (0: at epoch ends only)
    keep_every_epochs: int = 10  # keep a periodic copy every N epochs (0: none)
    grad_clip: float = 0.0  # clip the global gradient norm to this value (0: off)
    # A step whose loss exceeds loss_spike_factor x the median of the previous 50 is logged and counted
    # as a loss spike in the run record (0: off).
    loss_spike_factor: float = 3.0


@dataclass
class MonitorConfig:
    """The online kNN monitor (pretrain/knn_monitor.py): a watch on the run that never changes it."""

    knn_every_epochs: int = 0  # every N epochs and after the last (0: off)
    # Held-out images of the training classes in class folders; null: the generated data's val/ split.
    val_root: str | None = None
    bank_per_class: int = 100  # training images per class in the kNN bank (ImageNet: 100k images)
    max_queries: int = 10000  # held-out images classified (a fixed subset when there are more)
    k: int = 20
    temperature: float = 0.07
    batch_size: int = 256  # per process


@dataclass
class Config:
    name: str = "run"
    method: dict[str, Any] = field(default_factory=lambda: {"name": "sl"})
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    out_dir: str | None = None  # default: runs/pretrain/<name>

    @property
    def method_name(self) -> str:
        return self.method["name"]

    @property
    def peak_lr(self) -> float:
        """The learning rate after warmup: lr_per_256 scaled by the global batch."""
        return self.optim.lr_per_256 * self.train.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/pretrain/{self.name}")


# Keys that may change between a run and its resume without changing what is being trained.
RESUME_FREE_KEYS = {
    "name", "out_dir", "data.root", "data.workers", "data.generated_dir",
    "train.log_every", "train.save_every_steps", "train.keep_every_epochs", "train.device",
    "train.loss_spike_factor",
}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def resume_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint must share with the config that resumes it (the monitor only watches)."""
    return {k: v for k, v in flatten(config).items() if k not in RESUME_FREE_KEYS and not k.startswith("monitor.")}


# Keys added after run names were first derived from the hash: left out of it at their default, so that
# the runs of earlier configs keep their names (and resume).
HASH_OMITS_AT_DEFAULT = {"model.stem": "imagenet", "data.in_memory": False, "data.decoder": "pil",
                         "method.search_kernel": "torch", "method.compile": False, "method.compile_mode": "default"}


def config_hash(config: dict[str, Any]) -> str:
    identity = {k: v for k, v in resume_identity(config).items()
                if k not in HASH_OMITS_AT_DEFAULT or v != HASH_OMITS_AT_DEFAULT[k]}
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`a.b=3` -> {'a': {'b': 3}}; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"override '{text}' is not of the form key=value")
    value = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at top level")
    return data


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Config from a YAML file plus `key=value` overrides, with the method's params resolved."""
    raw: dict[str, Any] = load_yaml(path) if path else {}
    for text in overrides:
        raw = deep_merge(raw, parse_override(text))
    return config_from_dict(raw)


def config_from_dict(values: dict[str, Any]) -> Config:
    config = build_dataclass(Config, values)
    config.method = resolve_method_params(config.method)
    if config.train.batch_size <= 0:
        raise UserError("train.batch_size must be positive")
    if config.optim.lr_per_256 <= 0:
        raise UserError("optim.lr_per_256 must be positive")
    if config.data.in_memory and config.data.decoder != "pil":
        raise UserError("data.in_memory decodes every image once; data.decoder=gpu decodes each step's: "
                        "choose one")
    return config


def write_config(config: Config, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
