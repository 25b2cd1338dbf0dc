"""`make bench-dryrun`: every real protocol built, loaded and stepped here, and what it means on N GPUs.

For each protocol (every real schedule of the registered benchmarks: COCO Mask R-CNN in Detectron2 and in
MMDetection, VOC07+12 Faster R-CNN C4 in Detectron2, VOC FCN-D8 and ADE20K UPerNet in MMSegmentation), in
this process: build the full config and model, load the converted
checkpoint, and train a few iterations on the embedded data at the protocol's real input sizes with the
per-GPU batch of 8 GPUs. No evaluation, no checkpoint. Then print, for world sizes 1, 8 and 16, the
per-GPU batch, the global batch, the LR and the length, which never change with the world size.

  python -m benchmarks dryrun [--ckpt CKPT] [--iters 2] [--only coco:detectron2:1x ...]
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.runner import Plan, pick_device, prepare_weights
from benchmarks.spec import RunSpec, per_process_batch
from benchmarks.tasks import all_benchmarks, get_benchmark
from pretrain.errors import UserError
from transfer.source import read_backbone

# Every real (not embedded-data) schedule of every benchmark that fine-tunes a converted backbone.
PROTOCOLS = [(b.name, b.framework, schedule) for b in all_benchmarks() if b.converts
             for schedule in b.schedules if schedule not in b.embedded_schedules]
WORLD_SIZES = (1, 8, 16)
STEPPED_WORLD_SIZE = 8  # the per-GPU batch the iterations here run with


def random_backbone(out: Path, arch: str = "resnet50") -> Path:
    """A randomly initialised backbone in the suite's format: the dry run checks mechanics, not numbers."""
    import torch

    from pretrain.checkpoint import export_backbone
    from pretrain.config import IMAGENET_MEAN, IMAGENET_STD
    from pretrain.models import build_backbone

    existing = sorted((out / "ckpt").glob(f"random_{arch}_*.pth"))
    if existing:
        return existing[0]
    torch.manual_seed(0)
    model, _ = build_backbone(arch)
    meta = {"method": "random", "arch": arch, "dataset": "none", "epochs": 0, "dropped_heads": [],
            "input": {"channel_order": "RGB", "pixel_range": [0, 1], "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}
    return export_backbone(model.state_dict(), meta, out / "ckpt")


def step_protocol(task: str, framework: str, schedule: str, ckpt: Path, out: Path, iters: int,
                  world_size: int = STEPPED_WORLD_SIZE) -> dict[str, Any]:
    """Build, load and train `iters` iterations of one protocol here, with the per-process batch of
    `world_size` processes; returns its protocol record."""
    spec_task = get_benchmark(task, framework)
    run_dir = out / task / framework / schedule
    plan = Plan(spec_task, schedule, 0, ckpt, None, spec_task.embedded_data(), run_dir, pick_device("auto"), 1, ())
    # Always from scratch: a work folder left by an earlier dry run would be resumed (and step nothing).
    shutil.rmtree(run_dir / "work", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    weights, settings, _ = prepare_weights(plan, read_backbone(ckpt))
    spec = RunSpec(schedule, weights, settings, plan.data_root, run_dir / "work", 0, plan.device,
                   world_size, max_iters=iters)
    result = spec_task.run(spec)
    record = dict(result.protocol)
    record["wall_s"] = time.perf_counter() - started
    stepped = len(record.get("seconds_per_iter") or [])
    if stepped < iters:
        raise RuntimeError(f"the dry run of {task} {framework} {schedule} timed {stepped} of {iters} iterations")
    return record


def rows_for(task: str, framework: str, schedule: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The protocol at each world size: only the per-GPU batch changes (or the world size is refused)."""
    global_batch = record["global_batch"]
    seconds = record.get("seconds_per_iter") or []
    rows = []
    for world in WORLD_SIZES:
        try:
            per_gpu: Any = per_process_batch(global_batch, world, task)
        except UserError:
            per_gpu = "refused"
        rows.append({"protocol": f"{task} {framework} {schedule}", "world_size": world, "per_gpu_batch": per_gpu,
                     "global_batch": global_batch, "lr": record["lr"], "length": record.get("length_real", ""),
                     "cpu_s_per_iter": statistics.median(seconds[1:] or seconds) if seconds else None})
    return rows


def protocol_length(task: str, framework: str, schedule: str) -> str:
    """The real length of the schedule (the dry run itself stops early), from the framework's config."""
    length = get_benchmark(task, framework).schedule_length
    return length(schedule) if length else "—"


def markdown(rows: list[dict[str, Any]], iters: int) -> str:
    lines = ["| protocol | world size | per-GPU batch | global batch | lr | length | CPU s/iter (here, per-GPU "
             f"batch of {STEPPED_WORLD_SIZE} GPUs, {iters} iterations) |", "|---|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        seconds = "—" if row["cpu_s_per_iter"] is None or row["world_size"] != STEPPED_WORLD_SIZE \
            else f"{row['cpu_s_per_iter']:.1f}"
        lines.append(f"| {row['protocol']} | {row['world_size']} | {row['per_gpu_batch']} | {row['global_batch']} | "
                     f"{row['lr']:g} | {row['length']} | {seconds} |")
    return "\n".join(lines)


def dry_run(ckpt: str | Path | None = None, out: str | Path = "runs/dryrun", iters: int = 2,
            only: list[str] | None = None) -> str:
    out = Path(out)
    ckpt = Path(ckpt) if ckpt else random_backbone(out)
    selected = PROTOCOLS
    if only:
        wanted = {tuple(item.split(":")) for item in only}
        unknown = wanted - set(PROTOCOLS)
        if unknown:
            raise UserError(f"unknown protocol(s) {sorted(':'.join(u) for u in unknown)}; known: "
                            + ", ".join(":".join(p) for p in PROTOCOLS))
        selected = [p for p in PROTOCOLS if p in wanted]
    rows, built = [], {}
    for task, framework, schedule in selected:
        print(f"== {task} {framework} {schedule}: build, load {ckpt.name}, {iters} iteration(s)", flush=True)
        record = step_protocol(task, framework, schedule, ckpt, out, iters)
        record["length_real"] = protocol_length(task, framework, schedule)
        rows += rows_for(task, framework, schedule, record)
        print(f"   ok in {record['wall_s']:.0f} s; s/iter {[round(s, 1) for s in record.get('seconds_per_iter', [])]}",
              flush=True)
        semantics = get_benchmark(task, framework).built_semantics
        if semantics is not None:
            built[f"{task} {framework} {schedule}"] = semantics(schedule)
    table = markdown(rows, iters) + built_markdown(built)
    print(table)
    return table


def built_markdown(built: dict[str, dict[str, str]]) -> str:
    """What each protocol builds (benchmarks/built.py), one row each: `python -m benchmarks protocols` puts it
    beside what its reference built."""
    if not built:
        return ""
    aspects = list(dict.fromkeys(aspect for semantics in built.values() for aspect in semantics))
    lines = ["", "", "| protocol | " + " | ".join(aspects) + " |", "|---" * (len(aspects) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(semantics.get(a, "—") for a in aspects) + " |"
              for name, semantics in built.items()]
    return "\n".join(lines)
