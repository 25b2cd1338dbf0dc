"""The training loop shared by every method: data, DDP, AMP, schedule, logging, checkpoints, export."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import timm
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from pretrain.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    export_backbone,
    load_training_checkpoint,
)
from pretrain.config import Config, config_hash, resume_identity, write_config
from pretrain.data import GlobalBatchSampler, build_train_dataset, dataset_name, train_root
from pretrain.distributed import DistInfo, barrier, init_distributed, shutdown
from pretrain.errors import TrainingDiverged, UserError
from pretrain.methods import Method, get_method
from pretrain.models import build_backbone
from pretrain.optim import build_optimizer, set_lr


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"train.device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def _switch(value: str, device: torch.device, key: str) -> bool:
    if value not in ("auto", "on", "off", "bf16"):
        raise UserError(f"{key} must be auto, on or off, got '{value}'")
    return device.type == "cuda" if value == "auto" else value in ("on", "bf16")


def build_method(config: Config, targets: torch.Tensor) -> Method:
    backbone, feature_dim = build_backbone(config.model.arch)
    method_cls = get_method(config.method_name)
    params = method_cls.Params(**{k: v for k, v in config.method.items() if k != "name"})
    return method_cls(backbone, feature_dim, targets, params)


def check_resume_compatible(checkpoint: dict[str, Any], config: Config, fingerprint: dict, path: Path) -> None:
    saved, current = resume_identity(checkpoint["config"]), resume_identity(config.to_dict())
    diffs = [
        f"{key}: {saved.get(key, '<absent>')!r} in checkpoint, {current.get(key, '<absent>')!r} now"
        for key in sorted(set(saved) | set(current))
        if saved.get(key, "<absent>") != current.get(key, "<absent>")
    ]
    if diffs:
        raise UserError(
            f"cannot resume from {path}: it was written by a different config ({'; '.join(diffs[:6])}"
            f"{'; ...' if len(diffs) > 6 else ''}). Use another out_dir for a new run."
        )
    if checkpoint["dataset"] != fingerprint:
        raise UserError(
            f"cannot resume from {path}: the dataset differs (checkpoint {checkpoint['dataset']}, now {fingerprint})"
        )


class JsonlLog:
    """Per-step records, buffered on the device and written every `every` steps (one sync per flush)."""

    def __init__(self, path: Path | None, every: int):
        self.path, self.every = path, max(1, every)
        self.pending: list[dict[str, Any]] = []

    def event(self, name: str, **fields: Any) -> None:
        self._write([{"event": name, "time": time.time(), **fields}])

    def step(self, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        self.pending.append(record)
        if len(self.pending) >= self.every:
            return self.flush()
        return None

    def flush(self) -> list[dict[str, Any]]:
        rows = [{k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in r.items()} for r in self.pending]
        self.pending = []
        self._write(rows)
        return rows

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        with open(self.path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


class Trainer:
    def __init__(self, config: Config, resume_from: str | Path | None = None):
        self.config = config
        self.resume_from = Path(resume_from) if resume_from else None

    def run(self) -> Path:
        """Train (or resume, or notice the run is finished) and return the exported backbone file."""
        device = pick_device(self.config.train.device)
        info = init_distributed(device.type)
        try:
            return self._run(device, info)
        finally:
            shutdown()

    def _run(self, device: torch.device, info: DistInfo) -> Path:
        config, cfg_train = self.config, self.config.train
        run_dir = config.run_dir()
        ckpt_dir = run_dir / "checkpoints"
        if device.type == "cpu" and info.enabled:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if cfg_train.batch_size % info.world_size:
            raise UserError(f"train.batch_size {cfg_train.batch_size} is not divisible by {info.world_size} processes")

        # The generated dataset is written once, by rank 0.
        if info.is_main:
            train_root(config.data)
        barrier()
        dataset = build_train_dataset(config.data)
        fingerprint = dataset.fingerprint()
        sampler = GlobalBatchSampler(len(dataset), cfg_train.batch_size, info.rank, info.world_size, cfg_train.seed)
        steps_per_epoch = sampler.steps_per_epoch
        if steps_per_epoch == 0:
            raise UserError(f"the dataset has {len(dataset)} images, fewer than one batch of {cfg_train.batch_size}")
        total_steps = steps_per_epoch * config.schedule.epochs

        # Everything that can refuse the run is checked before anything is written.
        resume_path = self.resume_from or (ckpt_dir / "last.pt")
        checkpoint = None
        if self.resume_from or resume_path.is_file():
            checkpoint = load_training_checkpoint(resume_path)
            check_resume_compatible(checkpoint, config, fingerprint, resume_path)

        torch.manual_seed(cfg_train.seed)
        method = build_method(config, dataset.targets)
        if checkpoint is not None:
            method.load_state_dict(checkpoint["model"])
        method.to(device)
        method.to_device(device)
        channels_last = _switch(cfg_train.channels_last, device, "train.channels_last")
        if channels_last:
            method.to(memory_format=torch.channels_last)
        model: torch.nn.Module = method
        if info.enabled:
            if cfg_train.sync_bn:
                if device.type != "cuda":
                    raise UserError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
                method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
            model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = build_optimizer(method, config.optim)
        step, epoch, step_in_epoch = 0, 0, 0
        if checkpoint is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
            step, epoch, step_in_epoch = checkpoint["step"], checkpoint["epoch"], checkpoint["step_in_epoch"]

        log = JsonlLog(run_dir / "log.jsonl" if info.is_main else None, cfg_train.log_every)
        if info.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_config(config, run_dir / "config.yaml")
            if checkpoint is not None:
                print(f"resumed from {resume_path} at step {step}/{total_steps} (epoch {epoch})", flush=True)
                log.event("resume", step=step, epoch=epoch, checkpoint=str(resume_path))
            else:
                log.event("start", total_steps=total_steps, world_size=info.world_size, device=str(device))

        amp = _switch(cfg_train.amp, device, "train.amp")
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        )
        state = {"step": step, "epoch": epoch, "step_in_epoch": step_in_epoch}

        def save(path: Path) -> None:
            atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": config.to_dict(),
                    "config_hash": config_hash(config.to_dict()),
                    "dataset": fingerprint,
                    **state,
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                path,
            )

        progress = tqdm(total=total_steps, initial=step, disable=not info.is_main, dynamic_ncols=True,
                        desc=f"{config.method_name} {config.model.arch}", mininterval=1.0)
        model.train()
        window_start, window_images = time.perf_counter(), 0
        while state["epoch"] < config.schedule.epochs:
            sampler.set_epoch(state["epoch"], state["step_in_epoch"])
            torch.manual_seed(cfg_train.seed + 1000 * info.rank + state["epoch"])  # augmentation seeds
            loader = DataLoader(
                dataset, batch_size=sampler.local_batch, sampler=sampler, drop_last=True,
                num_workers=config.data.workers, pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            for images, labels, indices in loader:
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels, indices = labels.to(device, non_blocking=True), indices.to(device, non_blocking=True)
                lr = set_lr(optimizer, config.optim.lr, state["step"], total_steps, steps_per_epoch, config.schedule)
                with autocast:
                    outputs = model(images)
                loss, metrics = method.loss(outputs, labels, indices)
                if not torch.isfinite(loss):
                    last = ckpt_dir / "last.pt"
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {state['step']} (epoch {state['epoch']}): training diverged; "
                        f"the last good checkpoint is kept{f' at {last}' if last.is_file() else ''}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg_train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), cfg_train.grad_clip)
                optimizer.step()
                state["step"] += 1
                state["step_in_epoch"] += 1
                window_images += cfg_train.batch_size

                rows = log.step({"step": state["step"], "epoch": state["epoch"], "lr": lr,
                                 "loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}})
                progress.update(1)
                if rows:
                    elapsed = time.perf_counter() - window_start
                    progress.set_postfix(loss=f"{rows[-1]['loss']:.4f}", img_s=f"{window_images / elapsed:.0f}",
                                         epoch=state["epoch"])
                    window_start, window_images = time.perf_counter(), 0
                every = cfg_train.save_every_steps
                if every and state["step"] % every == 0 and state["step_in_epoch"] < steps_per_epoch:
                    if info.is_main:
                        save(ckpt_dir / "last.pt")

            method.check_consistent_across_ranks()
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            log.flush()
            if info.is_main:
                save(ckpt_dir / "last.pt")
                keep = cfg_train.keep_every_epochs
                if keep and state["epoch"] % keep == 0:
                    shutil.copyfile(ckpt_dir / "last.pt", ckpt_dir / f".epoch_{state['epoch']:04d}.tmp")
                    os.replace(ckpt_dir / f".epoch_{state['epoch']:04d}.tmp",
                               ckpt_dir / f"epoch_{state['epoch']:04d}.pt")
                log.event("epoch_end", epoch=state["epoch"], step=state["step"])
        progress.close()

        exported = None
        if info.is_main:
            finished_before = checkpoint is not None and step == total_steps
            exported = self._export(method, fingerprint, state["step"], reuse=finished_before)
            log.event("done", step=state["step"], exported=str(exported))
            print(f"exported backbone: {exported}", flush=True)
        barrier()
        return exported if exported is not None else Path()

    def _export(self, method: Method, fingerprint: dict, steps: int, reuse: bool) -> Path:
        config = self.config
        export_dir = config.run_dir() / "export"
        if reuse:  # a finished run started again: its export is already there
            for old in sorted(export_dir.glob(f"{config.method_name}_{config.model.arch}_*.pth")):
                return old
        meta = {
            "method": config.method_name,
            "arch": config.model.arch,
            "dataset": dataset_name(config.data),
            "dataset_info": {**fingerprint, "root": str(train_root(config.data).resolve())},
            "epochs": config.schedule.epochs,
            "steps": steps,
            # What the backbone was trained on: RGB, pixels scaled to [0, 1], then (x - mean) / std.
            "input": {"channel_order": "RGB", "pixel_range": [0, 1], "mean": config.data.mean,
                      "std": config.data.std, "image_size": config.data.image_size},
            "dropped_heads": [n for n, _ in method.named_children() if n != "backbone"]
            + (["memory"] if hasattr(method, "memory") else []),
            "config_hash": config_hash(config.to_dict()),
            "config": config.to_dict(),
            "timm_version": timm.__version__,
        }
        return export_backbone(method.backbone.state_dict(), meta, export_dir)


def train(config: Config, resume_from: str | Path | None = None) -> Path:
    return Trainer(config, resume_from).run()

