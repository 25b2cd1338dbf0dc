"""Training step time of sl, sl-mlp and look for one backbone and batch, with LOOK memories of several sizes.

Prints figures (never asserts them). Times the trainer's own `training_step` on synthetic images, so
data loading is left out and what remains is model + loss + memory search/update + optimizer.

  python -m pretrain.timers.step_time                      # CPU-sized defaults
  python -m pretrain.timers.step_time --arch resnet50 --batch 64 --image-size 224   # one GPU
The goal on a GPU: look <= 1.03x sl at 1.28M slots with ResNet-50.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from pretrain.config import config_from_dict
from pretrain.optim import build_optimizer
from pretrain.trainer import autocast_for, build_method, choose_precision, pick_device, training_step

IMAGENET_TRAIN_IMAGES = 1_281_167
TIMED_STEP = "timed step"
# CUDA runtime calls that make the host wait for the GPU (the timer's own cudaDeviceSynchronize aside)
HOST_WAITS = {"cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMalloc", "cudaFree",
              "cudaHostAlloc", "cudaStreamWaitEvent"}


class Setup:
    """One method with its model, optimizer and a fixed synthetic batch, ready to be stepped.

    `args` needs arch, batch, image_size, num_classes, amp ('bf16' | 'fp16' | 'off') and channels_last.
    """

    def __init__(self, method_name: str, slots: int, args: argparse.Namespace, device: torch.device,
                 label: str | None = None, method_params: dict | None = None):
        torch.manual_seed(0)
        self.name, self.slots, self.device, self.args = method_name, slots, device, args
        self.label = label or method_name
        params = {**(args.look if method_name == "look" else {}), **(method_params or {})}
        config = config_from_dict({"method": {"name": method_name, **params}, "model": {"arch": args.arch},
                                   "optim": {"name": "sgd", "lr_per_256": 0.01}})
        # `num_classes` classes over `slots` images (only LOOK's memory depends on slots).
        targets = torch.arange(max(slots, args.num_classes)) % args.num_classes
        self.method = build_method(config, targets)
        self.method.to(device)
        self.method.to_device(device)
        if args.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.method, config.optim, config.peak_lr)
        self.autocast = autocast_for(args.amp, device)
        self.scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
        self.generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=self.generator).to(device)
        if args.channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, args.num_classes, (args.batch,), generator=self.generator).to(device)
        self.num_images = len(targets)
        self.times: list[float] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, steps: int, record: bool) -> None:
        for _ in range(steps):
            indices = torch.randperm(self.num_images, generator=self.generator)[: self.args.batch].to(self.device)
            self.sync()
            start = time.perf_counter()
            with torch.profiler.record_function(TIMED_STEP):  # a profile's gaps are counted inside it only
                self.step(indices)
            self.sync()
            if record:
                self.times.append(time.perf_counter() - start)

    def step(self, indices: torch.Tensor) -> None:
        training_step(self.method, self.method, self.optimizer, self.images, self.labels, indices, self.autocast,
                      scaler=self.scaler)

    def peak_memory_mb(self) -> float | None:
        """Peak device memory of one step (CUDA only)."""
        if self.device.type != "cuda":
            return None
        torch.cuda.reset_peak_memory_stats(self.device)
        self.run(1, record=False)
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def row(self) -> dict:
        row = {"method": self.label, "slots": self.slots or None,
               "ms_per_step": 1000 * statistics.median(self.times), "ms_min": 1000 * min(self.times),
               "images_per_s": self.args.batch / statistics.median(self.times)}
        if self.name == "look":
            memory = self.method.memory.embeddings
            row["memory_mb"] = memory.numel() * memory.element_size() / 2**20
        return row


class HandWrittenSL(Setup):
    """The SL step written out by hand (no trainer, no method class): the bar the trainer's step is held to."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        super().__init__("sl", 0, args, device)
        self.label = "sl, hand-written loop"
        self.backbone, self.classifier = self.method.backbone, self.method.head
        params = list(self.backbone.parameters()) + list(self.classifier.parameters())
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step(self, indices: torch.Tensor) -> None:
        with self.autocast:
            logits = self.classifier(self.backbone(self.images))
        loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()


# operators that launch no kernel on a GPU (views, allocations, metadata)
FREE_OPERATIONS = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::as_strided", "aten::view",
                   "aten::unsqueeze", "aten::flatten", "aten::expand", "aten::t", "aten::transpose", "aten::slice",
                   "aten::select", "aten::alias", "aten::detach", "aten::reshape", "aten::resolve_conj",
                   "aten::permute", "aten::_reshape_alias", "aten::lift_fresh", "aten::result_type"}


def dispatched_operations(events) -> int:
    """Outermost operators among torch.profiler `events`, views and allocations aside: on a GPU, about the
    kernel launches the host issues."""
    outer = [e for e in events if e.name.startswith("aten::")
             and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    return sum(e.name not in FREE_OPERATIONS for e in outer)


def profile_steps(setup: Setup, steps: int) -> dict:
    """Per step, from torch.profiler over `steps` steps: `device_ms`, the GPU's work (the sum of its kernels' and
    copies' times; 0 on a CPU), and `operations` dispatched by the host. With the wall time measured without
    the profiler (`measure`), wall - GPU work is the time the GPU waits for the host; on a GPU, `idle_during`
    says what the host was doing while the GPU waited (ms a step by outermost operator) and `host_waits`
    counts the runtime calls that wait for the GPU (by the operator that made them)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        setup.run(steps, record=False)
    events = prof.events()
    device_us = sum(e.time_range.elapsed_us() for e in _device_work(events))
    profiled = {"device_ms": device_us / 1000 / steps, "operations": dispatched_operations(events) / steps}
    if setup.device.type == "cuda":
        profiled["idle_during"] = {name: ms / steps for name, ms in idle_during(events).items()}
        profiled["host_waits"] = {name: n / steps for name, n in host_waits(events).items()}
    return profiled


def _device_work(events) -> list:
    """The GPU's kernels and copies (the profiler also puts each `record_function` range on the GPU's timeline)."""
    from torch.autograd import DeviceType

    return [e for e in events if e.device_type == DeviceType.CUDA and e.name != TIMED_STEP]


def _timed_steps(events) -> list[tuple[float, float]]:
    """(start, end) of each timed step on the host's clock."""
    from torch.autograd import DeviceType

    return [(e.time_range.start, e.time_range.end) for e in events
            if e.name == TIMED_STEP and e.device_type == DeviceType.CPU]


def _outermost(event):
    while event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::"):
        event = event.cpu_parent
    return event


def idle_during(events) -> dict[str, float]:
    """Milliseconds the GPU had nothing to run inside timed steps, by the outermost operator the host was in
    (\"host, between operators\" where none: Python, autograd's engine, the optimizer's loop)."""
    from torch.autograd import DeviceType

    steps = _timed_steps(events)
    kernels = sorted((e.time_range.start, e.time_range.end) for e in _device_work(events))
    operators = [(e.time_range.start, e.time_range.end, e.name) for e in events
                 if e.device_type == DeviceType.CPU and e.name.startswith("aten::") and _outermost(e) is e]
    idle: dict[str, float] = {}
    for step_start, step_end in steps:
        busy_until = step_start
        for start, end in kernels:
            if start >= step_end:
                break
            if end <= step_start:
                continue
            if start > busy_until:
                _attribute(idle, busy_until, start, operators)
            busy_until = max(busy_until, end)
        if step_end > busy_until:
            _attribute(idle, busy_until, step_end, operators)
    return dict(sorted(idle.items(), key=lambda item: -item[1]))


def _attribute(idle: dict[str, float], start: float, end: float, operators: list) -> None:
    covered = 0.0
    for op_start, op_end, name in operators:
        overlap = min(end, op_end) - max(start, op_start)
        if overlap > 0:
            idle[name] = idle.get(name, 0.0) + overlap / 1000
            covered += overlap
    rest = (end - start) - covered
    if rest > 0:
        idle["host, between operators"] = idle.get("host, between operators", 0.0) + rest / 1000


def host_waits(events) -> dict[str, int]:
    """Runtime calls that wait for the GPU inside timed steps, as 'call in operator' -> count."""
    steps = _timed_steps(events)
    counts: dict[str, int] = {}
    for e in events:
        if e.name in HOST_WAITS and any(s <= e.time_range.start < t for s, t in steps):
            where = _outermost(e.cpu_parent).name if e.cpu_parent is not None else "no operator"
            key = f"{e.name} in {where}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def measure(setups: list[Setup], warmup: int, rounds: int, steps: int) -> list[dict]:
    """Warm every setup up, then time them in interleaved rounds (machine drift hits all alike)."""
    for setup in setups:
        setup.run(warmup, record=False)
    for _ in range(rounds):
        for setup in setups:
            setup.run(steps, record=True)
    return [setup.row() for setup in setups]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--slots", type=int, nargs="+", default=[10_000, 100_000, IMAGENET_TRAIN_IMAGES])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the rows to this file")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    args.amp = choose_precision("auto", device)  # as the trainer's `auto`
    args.channels_last = device.type == "cuda"
    args.look = {"k": 50, "temperature": 0.1, "embed_dim": 128}

    setups = [Setup("sl", 0, args, device), Setup("sl-mlp", 0, args, device)]
    setups += [Setup("look", slots, args, device) for slots in args.slots]
    rows = measure(setups, args.warmup, args.rounds, args.steps)
    base = rows[0]["ms_per_step"]
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# {args.arch}, batch {args.batch}, {args.image_size}px, {where}, amp={args.amp}, median of "
          f"{args.rounds} interleaved rounds x {args.steps} steps, after {args.warmup} warm-up steps each")
    print(f"{'method':8s} {'memory slots':>13s} {'ms/step':>9s} {'x sl':>6s} {'memory MB':>10s}")
    for row in rows:
        row["ratio_to_sl"] = row["ms_per_step"] / base
        slots = f"{row['slots']:,}" if row["slots"] else "-"
        mem = f"{row['memory_mb']:.0f}" if "memory_mb" in row else "-"
        print(f"{row['method']:8s} {slots:>13s} {row['ms_per_step']:9.1f} {row['ratio_to_sl']:6.2f} {mem:>10s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "device": where, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
