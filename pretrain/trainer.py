"""The training loop shared by every method: data, DDP, AMP, schedule, logging, checkpoints, export."""

from __future__ import annotations

import contextlib
import gc
import json
import os
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
from pretrain.config import Config, config_from_dict, config_hash, resume_identity, write_config
from pretrain.data import GlobalBatchSampler, build_train_dataset, dataset_name, train_root
from pretrain.data.gpu_decode import GpuDecodedImages, gpu_decoder_missing
from pretrain.data.memory import InMemoryImages
from pretrain.distributed import (
    DistInfo,
    any_rank,
    barrier,
    gather_all,
    in_group,
    init_distributed,
    shutdown,
    usable_cores,
)
from pretrain.errors import TrainingDiverged, UserError
from pretrain.files import atomic_copy
from pretrain.knn_monitor import KnnMonitor
from pretrain.methods import Method, get_method
from pretrain.models import build_backbone, strided_convs_on_one_pixel
from pretrain.monitor import LossSpikeDetector
from pretrain.optim import build_optimizer, set_lr, warmup_steps


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"train.device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def on_off(value: str, device: torch.device, key: str) -> bool:
    """An auto | on | off setting; auto means on for CUDA."""
    if value not in ("auto", "on", "off"):
        raise UserError(f"{key} must be auto, on or off, got '{value}'")
    return device.type == "cuda" if value == "auto" else value == "on"


def choose_precision(value: str, device: torch.device) -> str:
    """What `train.amp` means on this device: 'bf16', 'fp16' (with a grad scaler) or 'off'.

    auto: bf16 where the card computes it natively (not emulated: that is slower than fp32), else fp16;
    off on the CPU.
    """
    if value not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"train.amp must be auto, bf16, fp16 or off, got '{value}'")
    if value != "auto":
        return value
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def check_cpu_bf16_is_sound(backbone: torch.nn.Module, precision: str, device: torch.device,
                            image_size: int) -> None:
    """Refuse bf16 on a CPU where a strided convolution would see a 1x1 map: torch's CPU bfloat16 kernels
    return wrong weight gradients there (non-zero on taps that see only padding, different from run to run;
    seen with torch 2.13 on AMD avx512_bf16 and Intel AMX CPUs), and the run silently trains on garbage."""
    if precision != "bf16" or device.type != "cpu":
        return
    degenerate = strided_convs_on_one_pixel(backbone, image_size)
    if degenerate:
        sound = next((size for size in range(image_size + 8, 8 * image_size + 1, 8)
                      if not strided_convs_on_one_pixel(backbone, size)), None)
        fix = f"data.image_size={sound} or more" if sound else "a larger data.image_size"
        raise UserError(f"train.amp=bf16 on a CPU at data.image_size={image_size}: the strided convolution "
                        f"backbone.{degenerate[0]} would see a 1x1 map, where torch's CPU bfloat16 kernels compute "
                        f"wrong weight gradients that differ from run to run; use {fix}, or train.amp=off")


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """SyncBN through timm's converter: torch's turns timm's BatchNormAct2d into a plain SyncBatchNorm and
    so silently drops the activation (and drop) that layer applies after normalising."""
    return timm.layers.convert_sync_batchnorm(module)


def nonfinite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested state (dicts, lists) that hold NaN or inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [name for key, value in items for name in nonfinite_tensors(value, f"{prefix}.{key}".lstrip("."))]


def build_method(config: Config, targets: torch.Tensor) -> Method:
    backbone, feature_dim = build_backbone(config.model.arch, config.model.stem)
    method_cls = get_method(config.method_name)
    params = method_cls.Params(**{k: v for k, v in config.method.items() if k != "name"})
    return method_cls(backbone, feature_dim, targets, params)


def check_resume_compatible(checkpoint: dict[str, Any], config: Config, fingerprint: dict, path: Path) -> None:
    saved, current = resume_identity(checkpoint["config"]), resume_identity(config.to_dict())
    # A key added to the code after the checkpoint was written: the run had its default behaviour.
    defaults = resume_identity(config_from_dict({"method": {"name": config.method_name}}).to_dict())
    saved |= {key: defaults[key] for key in current.keys() - saved.keys() if key in defaults}
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


@contextlib.contextmanager
def _workers_stopped_on_exit(batches):
    """The loader's iterator, its worker processes stopped when the epoch ends, however it ends. An epoch left
    by an exception (a corrupt image, a diverged loss) would otherwise leave them to the garbage collector,
    whose finalizers close the queues first: the workers never hear the stop and are killed after a 5 s
    timeout, a pause in any program that calls the trainer and goes on (a test, the proxy tier's runs)."""
    try:
        yield batches
    finally:
        stop = getattr(batches, "_shutdown_workers", None)  # only the multi-process iterator has workers
        if stop is not None:
            stop()
        close = getattr(batches, "close", None)  # a generator over a loader (the GPU decoder) stops its own
        if close is not None:
            close()


class JsonlLog:
    """`log.jsonl`: one JSON object per line, per logged step or per event (None: this rank writes nothing).
    The logged steps' numbers also go to TensorBoard event files in `tensorboard/` beside it."""

    def __init__(self, path: Path | None):
        self.path = path
        self._writer = None

    def event(self, name: str, **fields: Any) -> None:
        self.write([{"event": name, "time": time.time(), **fields}])

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        with open(self.path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        steps = [row for row in rows if "event" not in row and "step" in row]
        if steps:
            writer = self._tensorboard()
            for row in steps:
                for key, value in row.items():
                    if key not in ("step", "epoch") and isinstance(value, int | float):
                        writer.add_scalar(f"train/{key}", value, row["step"])
            writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Numbers logged apart from the steps' (the kNN monitor's), as TensorBoard scalars only."""
        if self.path is None:
            return
        writer = self._tensorboard()
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
        return self._writer


def training_step(
    model: torch.nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step; `model` is `method` or its DDP wrapper. Also what the speed benchmark times.

    `scaler` (fp16 only) scales the loss and skips steps whose gradients overflowed.
    """
    with autocast:
        outputs = model(images)
    loss, metrics = method.loss(outputs, labels, indices)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return loss, metrics


class Trainer:
    """Builds everything from a Config, then trains; `run()` is safe to call again on a finished run."""

    def __init__(self, config: Config, resume_from: str | Path | None = None):
        self.config = config
        self.resume_from = Path(resume_from) if resume_from else None
        self.run_dir = config.run_dir()
        self.ckpt_dir = self.run_dir / "checkpoints"

    def run(self) -> Path:
        """Train (or resume, or notice the run is finished) and return the exported backbone file."""
        device = pick_device(self.config.train.device)
        info = init_distributed(device.type)
        try:
            self._setup(device, info)
            finished_before = self.step == self.total_steps
            # closed on the way out of an error too, so that an error message starts on its own line
            with tqdm(total=self.total_steps, initial=self.step, disable=not info.is_main, dynamic_ncols=True,
                      desc=f"{self.config.method_name} {self.config.model.arch}", mininterval=1.0) as progress:
                self.progress = progress
                while self.epoch < self.config.schedule.epochs:
                    self._train_epoch()
            exported = Path()
            if info.is_main:
                exported = self._export(reuse=finished_before)
                self.log.event("done", step=self.step, exported=str(exported), **self.spikes.summary())
                spikes = self.spikes.summary()
                if spikes["loss_spikes"]:
                    print(f"warning: {spikes['loss_spikes']} loss spike(s) in this run (steps "
                          f"{', '.join(map(str, spikes['spike_steps']))}; largest loss {spikes['max_loss']:.3g} at "
                          f"step {spikes['max_loss_step']}): the backbone may be damaged", flush=True)
                print(f"exported backbone: {exported}", flush=True)
            barrier()
            return exported
        finally:
            # DDP's reducer holds the process group. Freed first, it is not the group's last holder, so the group
            # goes with destroy_process_group (which releases the GIL), not with the reducer at interpreter exit,
            # where gloo's destructor can deadlock with its worker thread over the GIL (seen: a finished
            # 2-process run that never exited). Without a group nothing waits on it: no collection (0.1-0.3 s
            # of a short run, in a process that imported the frameworks).
            self.model = None
            if in_group():
                gc.collect()
            shutdown()

    def _setup(self, device: torch.device, info: DistInfo) -> None:
        config, cfg_train = self.config, self.config.train
        if device.type == "cpu" and info.enabled:
            torch.set_num_threads(max(1, usable_cores() // info.world_size))
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if cfg_train.batch_size % info.world_size:
            raise UserError(f"train.batch_size {cfg_train.batch_size} is not divisible by {info.world_size} processes")
        self.device, self.info = device, info

        if info.is_main:  # the generated dataset is written once, by rank 0
            train_root(config.data)
        barrier()
        self.dataset = build_train_dataset(config.data)
        self.fingerprint = self.dataset.fingerprint()
        self.sampler = GlobalBatchSampler(len(self.dataset), cfg_train.batch_size, info.rank, info.world_size,
                                          cfg_train.seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        data = config.data
        self.memory = InMemoryImages(self.dataset, device, data.image_size, data.crop_scale, data.mean, data.std) \
            if data.in_memory else None
        self.gpu_decoder = None
        if data.decoder == "gpu":
            missing = gpu_decoder_missing(device)
            if missing:
                if info.is_main:
                    print(f"warning: {missing}: the file path (PIL in {data.workers} loader workers) runs instead",
                          flush=True)
            else:
                self.gpu_decoder = GpuDecodedImages(self.dataset, device, data.image_size, data.crop_scale,
                                                    data.mean, data.std, data.workers)
        self.knn_monitor = KnnMonitor(config, self.dataset.classes, info.rank, info.world_size, device) \
            if config.monitor.knn_every_epochs > 0 else None
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the dataset has {len(self.dataset)} images, fewer than one batch of {cfg_train.batch_size}"
            )
        self.total_steps = self.steps_per_epoch * config.schedule.epochs

        # Everything that can refuse the run is checked before anything is written.
        resume_path = self.resume_from or (self.ckpt_dir / "last.pt")
        checkpoint = None
        if self.resume_from or resume_path.is_file():
            checkpoint = load_training_checkpoint(resume_path)
            check_resume_compatible(checkpoint, config, self.fingerprint, resume_path)

        torch.manual_seed(cfg_train.seed)
        method = build_method(config, self.dataset.targets)
        if checkpoint is not None:
            method.load_state_dict(checkpoint["model"])
        method.to(device)
        method.to_device(device)
        self.channels_last = on_off(cfg_train.channels_last, device, "train.channels_last")
        if self.channels_last:
            method.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = method
        if info.enabled:
            if cfg_train.sync_bn:
                if device.type != "cuda":
                    raise UserError("train.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
                method = convert_sync_batchnorm(method)
            self.model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
        self.method = method
        self.optimizer = build_optimizer(method, config.optim, config.peak_lr)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.spikes = LossSpikeDetector(factor=cfg_train.loss_spike_factor)
        self.knn_history: list[dict[str, float]] = []
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.step, self.epoch = checkpoint["step"], checkpoint["epoch"]
            self.step_in_epoch = checkpoint["step_in_epoch"]
            if "loss_spikes" in checkpoint:
                self.spikes.load_state_dict(checkpoint["loss_spikes"])
            self.knn_history = list(checkpoint.get("knn_monitor", []))
        self.precision = choose_precision(cfg_train.amp, device)
        check_cpu_bf16_is_sound(method.backbone, self.precision, device, config.data.image_size)
        self.autocast = autocast_for(self.precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        if self.scaler is not None and checkpoint is not None and checkpoint.get("grad_scaler"):
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        self.pending: list[dict[str, Any]] = []
        self.window_start = time.perf_counter()
        self.inject_nonfinite = _injected_fault(info.rank)

        self.log = JsonlLog(self.run_dir / "log.jsonl" if info.is_main else None)
        if info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_config(config, self.run_dir / "config.yaml")
            schedule = self.schedule_record()
            precision = self.precision_record()
            print(f"lr {schedule['peak_lr']:g} (lr_per_256 {config.optim.lr_per_256:g} x global batch "
                  f"{cfg_train.batch_size} / 256 on {info.world_size} process(es)), warmup "
                  f"{schedule['warmup_steps']} of {self.total_steps} steps; {device.type}, amp {self.precision}, "
                  f"channels_last {'on' if self.channels_last else 'off'}, sync_bn "
                  f"{'on' if precision['sync_bn'] else 'off'}", flush=True)
            if checkpoint is not None:
                print(f"resumed from {resume_path} at step {self.step}/{self.total_steps} (epoch {self.epoch})",
                      flush=True)
                self.log.event("resume", step=self.step, epoch=self.epoch, checkpoint=str(resume_path),
                               world_size=info.world_size, data_path=self.data_path(), **precision)
            else:
                self.log.event("start", device=str(device), data_path=self.data_path(), **schedule, **precision)

    def data_path(self) -> str:
        """Which data path feeds the steps (data.decoder=gpu falls back to the files without a CUDA device)."""
        if self.memory is not None:
            return "in memory"
        return "gpu decoder" if self.gpu_decoder is not None else "files"

    def schedule_record(self) -> dict[str, Any]:
        """The resolved optimisation protocol: what `lr_per_256` and the batch turned into for this run."""
        config = self.config
        return {"lr_per_256": config.optim.lr_per_256, "global_batch": config.train.batch_size,
                "peak_lr": config.peak_lr, "world_size": self.info.world_size,
                "per_process_batch": config.train.batch_size // self.info.world_size,
                "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                "warmup_steps": warmup_steps(config.schedule, self.steps_per_epoch)}

    def precision_record(self) -> dict[str, Any]:
        """How the steps were computed: what `auto` resolved to on this machine."""
        return {"amp": self.precision, "channels_last": self.channels_last,
                "sync_bn": bool(self.config.train.sync_bn and self.info.enabled)}

    def _train_epoch(self) -> None:
        config, cfg_train = self.config, self.config.train
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        torch.manual_seed(cfg_train.seed + 1000 * self.info.rank + self.epoch)  # augmentation seeds
        if self.memory is not None:
            loader = self.memory.batches(self.sampler, cfg_train.seed, self.info.rank, self.epoch)
        elif self.gpu_decoder is not None:
            loader = self.gpu_decoder.batches(self.sampler, cfg_train.seed, self.info.rank, self.epoch)
        else:
            loader = DataLoader(self.dataset, batch_size=self.sampler.local_batch, sampler=self.sampler,
                                drop_last=True, num_workers=config.data.workers,
                                pin_memory=self.device.type == "cuda")
        self.model.train()
        self.window_start = time.perf_counter()
        with _workers_stopped_on_exit(iter(loader)) as batches:
            for batch in batches:
                self.pending.append(self._step(*batch))
                self.progress.update(1)
                if len(self.pending) >= max(1, cfg_train.log_every):
                    self._flush()
                every = cfg_train.save_every_steps
                if every and self.step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                    self._save()

        self.method.check_consistent_across_ranks()
        self.epoch += 1
        self.step_in_epoch = 0
        self._monitor()
        self._save()
        keep = cfg_train.keep_every_epochs
        if self.info.is_main and keep and self.epoch % keep == 0:
            periodic = self.ckpt_dir / f"epoch_{self.epoch:04d}.pt"
            atomic_copy(self.ckpt_dir / "last.pt", periodic)
        self.log.event("epoch_end", epoch=self.epoch, step=self.step)

    def _monitor(self) -> None:
        """The online kNN monitor, every `monitor.knn_every_epochs` epochs and after the last one."""
        every, epochs = self.config.monitor.knn_every_epochs, self.config.schedule.epochs
        if self.knn_monitor is None or (self.epoch % every and self.epoch != epochs):
            return
        self._flush()
        result = {"epoch": self.epoch, "step": self.step, **self.knn_monitor.measure(self.method.backbone,
                                                                                      self.autocast)}
        self.knn_history.append(result)
        self.log.event("knn_monitor", **result)
        self.log.scalars({"monitor/knn_top1": result["knn_top1"]}, self.step)
        if self.info.is_main:
            self.progress.write(f"epoch {self.epoch}: kNN top-1 {result['knn_top1']:.2f}% ({result['queries']} "
                                f"held-out images, bank of {result['bank']}, {result['seconds']:.1f} s)")

    def _step(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> dict[str, Any]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels, indices = labels.to(self.device, non_blocking=True), indices.to(self.device, non_blocking=True)
        if self.inject_nonfinite == self.step + 1:
            images = images * float("nan")
        lr = set_lr(self.optimizer, self.config.peak_lr, self.step, self.total_steps, self.steps_per_epoch,
                    self.config.schedule)
        loss, metrics = training_step(self.model, self.method, self.optimizer, images, labels, indices,
                                      self.autocast, self.config.train.grad_clip, self.scaler)
        self.step += 1
        self.step_in_epoch += 1
        # Tensors stay on the device until the log flushes: no host sync per step.
        return {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": loss.detach(),
                **{k: v.detach() for k, v in metrics.items()}}

    def _flush(self) -> None:
        """Average the pending steps' records over all ranks, stop every rank on a non-finite loss, log.

        One all_gather and one host sync per flush; throughput is summed over the ranks.
        """
        records, self.pending = self.pending, []
        if not records:
            return
        elapsed = time.perf_counter() - self.window_start
        keys = [k for k, v in records[0].items() if isinstance(v, torch.Tensor)]
        local = torch.stack([torch.stack([r[k].float() for k in keys]) for r in records])
        speed = local.new_full((1,), self.sampler.local_batch * len(records) / elapsed)
        gathered = gather_all(torch.cat([local.flatten(), speed])).cpu()
        per_rank = gathered[:, :-1].reshape(len(gathered), len(records), len(keys))
        losses = per_rank[:, :, keys.index("loss")]
        bad = (~torch.isfinite(losses)).nonzero()  # (rank, row) pairs, identical on every rank
        if len(bad):
            row = int(bad[:, 1].min())
            ranks = sorted({int(r) for r, i in bad.tolist() if i == row})
            self._stop(f"loss is {losses[ranks[0], row].item()} on rank {', '.join(map(str, ranks))} of "
                       f"{self.info.world_size} at step {records[row]['step']} (epoch {records[row]['epoch']})")
        mean = per_rank.mean(0)
        rows = [{**{k: v for k, v in record.items() if k not in keys},
                 **{k: mean[i, j].item() for j, k in enumerate(keys)}} for i, record in enumerate(records)]
        rows[-1]["img_s"] = gathered[:, -1].sum().item()
        self.log.write(rows)
        for row in rows:
            self._check_spike(row)
        self.progress.set_postfix(loss=f"{rows[-1]['loss']:.4f}", img_s=f"{rows[-1]['img_s']:.0f}", epoch=self.epoch)
        self.window_start = time.perf_counter()

    def _stop(self, reason: str) -> None:
        """Every rank calls this at the same step; the log keeps the reason even if a rank is killed first."""
        last = self.ckpt_dir / "last.pt"
        kept = f" at {last}" if last.is_file() else " (none was written yet)"
        message = f"{reason}: training diverged and every rank stopped; the last good checkpoint is kept{kept}"
        self.log.event("diverged", step=self.step, message=message)
        raise TrainingDiverged(message)

    def _check_spike(self, row: dict[str, Any]) -> None:
        spike = self.spikes.update(row["step"], row["loss"])
        if spike is None:
            return
        self.log.event("loss_spike", **spike, lr=row["lr"])
        if self.info.is_main:
            self.progress.write(
                f"warning: loss spike at step {spike['step']}: {spike['loss']:.3g}, "
                f"{spike['loss'] / spike['running_median']:.1f}x its running median "
                f"{spike['running_median']:.3g} (lr {row['lr']:.3g}); {len(self.spikes.spikes)} so far. "
                "The run goes on; the count is recorded with the backbone.")

    def _save(self) -> None:
        """Write `last.pt` atomically; never a state that holds NaN or inf (checked on all ranks together)."""
        self._flush()
        state = self._checkpoint_state() if self.info.is_main else {}
        bad = nonfinite_tensors(state)
        if any_rank(bool(bad), self.device):
            self._stop(f"the training state holds non-finite values at step {self.step} (epoch {self.epoch}"
                       f"{': ' + ', '.join(bad[:3]) if bad else ''}), so it was not saved")
        if self.info.is_main:
            atomic_save(state, self.ckpt_dir / "last.pt")

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "config_hash": config_hash(self.config.to_dict()),
            "dataset": self.fingerprint,
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "precision": self.precision_record(),
            "world_size": self.info.world_size,
            "loss_spikes": self.spikes.state_dict(),
            "knn_monitor": self.knn_history,
        }

    def _export(self, reuse: bool) -> Path:
        config = self.config
        export_dir = self.run_dir / "export"
        if reuse:  # a finished run started again: its export is already there
            for old in sorted(export_dir.glob(f"{config.method_name}_{config.model.arch}_*.pth")):
                return old
        meta = {
            "method": config.method_name,
            "arch": config.model.arch,
            "stem": config.model.stem,
            "dataset": dataset_name(config.data),
            "dataset_info": {**self.fingerprint, "root": str(train_root(config.data).resolve())},
            "epochs": config.schedule.epochs,
            "steps": self.step,
            # What the backbone was trained on: RGB, pixels scaled to [0, 1], then (x - mean) / std.
            "input": {"channel_order": "RGB", "pixel_range": [0, 1], "mean": config.data.mean,
                      "std": config.data.std, "image_size": config.data.image_size},
            "dropped_heads": [n for n, _ in self.method.named_children() if n != "backbone"]
            + (["memory"] if hasattr(self.method, "memory") else []),
            "config_hash": config_hash(config.to_dict()),
            "config": config.to_dict(),
            "schedule": self.schedule_record(),
            "precision": self.precision_record(),
            "training": self.spikes.summary(),
            "knn_monitor": self.knn_history,
            "timm_version": timm.__version__,
        }
        return export_backbone(self.method.backbone.state_dict(), meta, export_dir)


def _injected_fault(rank: int) -> int:
    """Fault injection for the tests: PRETRAIN_INJECT_NAN=RANK:STEP feeds NaN images to that rank at that step."""
    text = os.environ.get("PRETRAIN_INJECT_NAN", "")
    if not text:
        return -1
    fault_rank, step = (int(part) for part in text.split(":"))
    return step if fault_rank == rank else -1


def train(config: Config, resume_from: str | Path | None = None) -> Path:
    return Trainer(config, resume_from).run()

