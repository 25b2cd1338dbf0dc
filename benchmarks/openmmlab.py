"""What the MMDetection and MMSegmentation benchmarks share: config → settings → mmengine Runner → metrics.

A benchmark config (`configs/<framework>/<model>_<schedule>.py`) holds the protocol over the framework's
own packaged config. This module adds what belongs to the run: the converted backbone (`init_cfg`
Pretrained), the backbone's depth and the heads' input channels, the data preprocessor recorded with
the checkpoint, the dataset root, the work dir and the seed. What differs per task (dataset fields,
which heads read which stages, how metrics are named) stays in the task's module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"

# Output channels of the four ResNet stages: basic blocks (18/34) vs bottlenecks (50+).
STAGE_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048],
                  101: [256, 512, 1024, 2048], 152: [256, 512, 1024, 2048]}


def load_config(framework: str, model: str, schedule: str):
    from mmengine.config import Config

    return Config.fromfile(str(CONFIG_DIR / framework / f"{model}_{schedule}.py"))


def apply_backbone(cfg, weights: Path, settings: dict[str, Any]) -> list[int]:
    """Point the backbone at the converted weights with the recorded settings; returns stage channels."""
    backbone = settings["model.backbone"]
    cfg.model.backbone.update(backbone)
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(weights))
    cfg.model.pop("pretrained", None)  # mmseg's base configs name a hub checkpoint there
    cfg.model.data_preprocessor.update(settings["model.data_preprocessor"])
    return STAGE_CHANNELS[backbone["depth"]]


def set_dataset(cfg, data_root: Path, **dataset_fields: Any) -> None:
    """Set root and fields on the train/val/test datasets (ConcatDataset parts included)."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = cfg[loader].dataset
        for part in dataset.get("datasets", [dataset]):
            part.data_root = str(data_root)
            part.update(dataset_fields)


def finish_config(cfg, run_dir: Path, seed: int) -> None:
    cfg.work_dir = str(run_dir)
    cfg.randomness = dict(seed=seed)
    cfg.resume = True  # mmengine resumes from work_dir's last_checkpoint when there is one
    cfg.load_from = None
    cfg.launcher = "pytorch" if _distributed() else "none"  # env:// rendezvous, NCCL (env_cfg's default)


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def _unrestricted_unpickling() -> Iterator[None]:
    """mmengine loads checkpoints with torch's weights_only default, which refuses its own training
    state (message hub, history buffers). Used only to resume this run's own work_dir checkpoint."""
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def train_and_evaluate(cfg, convert_metrics: Callable[[dict[str, float]], dict[str, dict[str, float]]]
                       ) -> dict[str, dict[str, float]]:
    """Train with mmengine's Runner (resuming if work_dir has a checkpoint), evaluate with the config's
    evaluator at the end of training, and return the metrics in the suite's shape."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class ResumingRunner(Runner):
        def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
            if not Path(filename).resolve().is_relative_to(Path(self.work_dir).resolve()):
                raise ValueError(f"refusing to resume from {filename}: not in this run's work dir")
            with _unrestricted_unpickling():
                super().resume(filename, *args, **kwargs)

    recorded: dict[str, float] = {}

    class RecordMetrics(Hook):
        def after_val_epoch(self, runner, metrics=None) -> None:
            recorded.clear()
            recorded.update(metrics or {})

    runner = ResumingRunner.from_cfg(cfg)
    runner.register_hook(RecordMetrics(), priority="LOWEST")
    runner.train()
    # A run resumed after its last iteration does not validate again; evaluate it here.
    metrics = recorded or runner.test()
    return convert_metrics(metrics)
