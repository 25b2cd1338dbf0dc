"""The shared benchmark runner: one run directory per (task, framework, schedule, checkpoint, seed).

A run directory holds the converted weights (`weights/`), the framework's resolved config
(`config.yaml`), `run.json` (what ran, on what, with which versions), the framework's own logs,
checkpoints and outputs (`work/`), and finally `result.json`. A run whose `result.json` says
finished is skipped; an unfinished one resumes from the framework's last checkpoint; a failed one
records `failure.json` and never touches the results of other runs. Each framework's training is
one `Task.run`; `benchmarks.launch` starts it in 1 or N processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.launch import is_main_process, train_in_processes
from pretrain.checkpoint import atomic_write_json, utc_now
from pretrain.errors import UserError
from transfer.export import export, source_summary
from transfer.source import read_backbone


@dataclass(frozen=True)
class Task:
    name: str
    framework: str
    required_files: tuple[str, ...]  # relative to the data root
    embedded_data: Callable[[], Path]  # the generated dataset the smoke schedule uses
    run: Callable[[str, Path, dict, Path, Path, int], tuple[str, dict[str, dict[str, float]]]]
    headline: tuple[tuple[str, str], ...]  # (metric group, metric) that must be finite
    schedules: tuple[str, ...] = ("1x", "2x", "smoke")
    embedded_schedules: tuple[str, ...] = ("smoke",)  # schedules that may run on the embedded data
    converts: bool = True  # False: the task reads the checkpoint itself (frozen features)


def _detectron2_coco(schedule: str, weights: Path, settings: dict, data_root: Path, run_dir: Path, seed: int):
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from benchmarks.detectron2_coco import build_config, train_and_evaluate

    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(output=str(run_dir / "log.txt"), distributed_rank=comm.get_rank())
    cfg = build_config(schedule, weights, settings, data_root, run_dir, seed)
    return cfg.dump(), train_and_evaluate(cfg)


def _mmdet_coco(schedule: str, weights: Path, settings: dict, data_root: Path, run_dir: Path, seed: int):
    from benchmarks.mmdet_coco import build_config, coco_metrics
    from benchmarks.openmmlab import train_and_evaluate

    cfg = build_config(schedule, weights, settings, data_root, run_dir, seed)
    return cfg.pretty_text, train_and_evaluate(cfg, coco_metrics)


def _mmseg(task: str) -> Callable:
    def run(schedule: str, weights: Path, settings: dict, data_root: Path, run_dir: Path, seed: int):
        from benchmarks.mmseg_semseg import build_config, segmentation_metrics
        from benchmarks.openmmlab import train_and_evaluate

        cfg = build_config(task, schedule, weights, settings, data_root, run_dir, seed)
        return cfg.pretty_text, train_and_evaluate(cfg, segmentation_metrics)

    return run


def _probe(schedule: str, weights: Path, settings: dict, data_root: Path, run_dir: Path, seed: int):
    from benchmarks.probe import run_probe

    return run_probe(schedule, weights, settings, data_root, run_dir, seed)


def _embedded_fine_labels() -> Path:
    from pretrain.config import GeneratedDataConfig
    from pretrain.data.generated import fine_view, generate

    return fine_view(generate(GeneratedDataConfig()))


def _embedded_coco() -> Path:
    from benchmarks.data.coco import CocoSpec, generate_coco

    return generate_coco(CocoSpec())


def _embedded_voc() -> Path:
    from benchmarks.data.segmentation import SegSpec, generate_voc

    return generate_voc(SegSpec())


def _embedded_ade20k() -> Path:
    from benchmarks.data.segmentation import SegSpec, generate_ade20k

    return generate_ade20k(SegSpec())


COCO_FILES = ("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json")
VOC_FILES = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation/train.txt",
             "ImageSets/Segmentation/aug.txt", "ImageSets/Segmentation/val.txt")
ADE20K_FILES = ("images/training", "images/validation", "annotations/training", "annotations/validation")
COCO_HEADLINE = (("bbox", "AP"), ("segm", "AP"))
SEG_HEADLINE = (("sem_seg", "mIoU"),)
TASKS: dict[tuple[str, str], Task] = {
    ("coco", "detectron2"): Task("coco", "detectron2", COCO_FILES, _embedded_coco, _detectron2_coco, COCO_HEADLINE),
    ("coco", "mmdet"): Task("coco", "mmdet", COCO_FILES, _embedded_coco, _mmdet_coco, COCO_HEADLINE),
    ("voc", "mmseg"): Task("voc", "mmseg", VOC_FILES, _embedded_voc, _mmseg("voc"), SEG_HEADLINE),
    ("ade20k", "mmseg"): Task("ade20k", "mmseg", ADE20K_FILES, _embedded_ade20k, _mmseg("ade20k"), SEG_HEADLINE),
    # Frozen features: linear probe, kNN and intra-class diagnostics on an ImageFolder train/val pair;
    # the embedded data is the generated set labelled by sub-mode (coarse-to-fine).
    ("probe", "frozen"): Task("probe", "frozen", ("train", "val"), _embedded_fine_labels, _probe,
                              (("probe", "linear_top1"), ("probe", "knn_top1")), schedules=("standard",),
                              embedded_schedules=("standard",), converts=False),
}


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def framework_version(framework: str) -> str:
    import importlib.metadata as metadata

    packages = {"detectron2": "sal-detectron2", "mmdet": "mmdet", "mmseg": "mmsegmentation", "frozen": "torch"}
    package = packages[framework]
    return metadata.version(package)


def run_benchmark(task: str, ckpt: str | Path, framework: str, schedule: str, seed: int = 0,
                  data: str | Path | None = None, out: str | Path = "runs/bench", gpus: int = 1) -> Path:
    """Run (or skip, or resume) one benchmark on `gpus` GPU processes; returns its run directory.

    Under `torchrun` (mmdet / mmseg) every process calls this; only rank 0 writes the run's records."""
    if (task, framework) not in TASKS:
        known = ", ".join(f"{t} --framework {f}" for t, f in TASKS)
        raise UserError(f"no benchmark '{task}' for framework '{framework}' yet; available: {known}")
    spec = TASKS[(task, framework)]
    if schedule not in spec.schedules:
        raise UserError(f"unknown schedule '{schedule}' for {task}; choose from {', '.join(spec.schedules)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (framework == "detectron2" or gpus > 1):
        raise UserError("under torchrun, run mmdet / mmseg benchmarks without --gpus; Detectron2 starts its "
                        "own processes: use --gpus N without torchrun")
    if gpus < 1 or (gpus > 1 and gpus > _cuda_devices()):
        raise UserError(f"--gpus {gpus}: this machine has {_cuda_devices()} CUDA GPU(s)")
    main = is_main_process()
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    if data is None:
        if schedule not in spec.embedded_schedules:
            raise UserError(f"--data is required for the {schedule} schedule (the real dataset's folder)")
        data_root = spec.embedded_data()
    else:
        data_root = Path(data)
        missing = [name for name in spec.required_files if not (data_root / name).exists()]
        if missing:
            raise UserError(f"{task} data not found under {data_root}: missing {', '.join(missing)}")

    run_dir = Path(out) / task / framework / schedule / ckpt.name.split(".")[0] / f"seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.is_file() and json.loads(result_path.read_text()).get("status") == "finished":
        print(f"already finished: {result_path}")
        return run_dir
    backbone = read_backbone(ckpt)  # an unreadable checkpoint is refused before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    if spec.converts:
        record = export(backbone, [framework], run_dir / "weights", verify=True)
        target = record["targets"][framework]
        source, weights, settings = record["source"], run_dir / "weights" / target["file"], target["settings"]
    else:
        source, weights, settings = source_summary(backbone), ckpt.resolve(), {}
    provenance = {
        "task": task, "framework": framework, "framework_version": framework_version(framework),
        "schedule": schedule, "seed": seed, "data": str(data_root.resolve()), "embedded_data": data is None,
        "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": source["sha256"],
        "method": source["method"], "arch": source["arch"], "recipe": source["recipe"],
        "started": utc_now(),
    }
    if main:
        atomic_write_json(run_dir / "run.json", provenance)
        (run_dir / "failure.json").unlink(missing_ok=True)
    try:
        resolved, metrics = train_in_processes(
            (task, framework), gpus,
            (schedule, weights, settings, data_root, run_dir / "work", seed),
            run_dir / "work" / "final_result.json")
    except Exception as e:
        if not main:
            raise
        failure = {**provenance, "status": "failed", "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()}
        atomic_write_json(run_dir / "failure.json", failure)
        raise UserError(f"{task}/{framework}/{schedule} failed: {type(e).__name__}: {e} "
                        f"(recorded in {run_dir / 'failure.json'})") from None
    if not main:
        return run_dir
    (run_dir / "config.yaml").write_text(resolved)
    provenance["config_sha256"] = hashlib.sha256(resolved.encode()).hexdigest()
    # A size bucket without objects is NaN in COCO's own report; a NaN loss raises during training.
    # What must be finite is each task's headline number.
    headline = [metrics.get(group, {}).get(name) for group, name in spec.headline]
    if any(v is None or not math.isfinite(v) for v in headline):
        failure = {**provenance, "status": "failed", "error": "non-finite metrics", "metrics": metrics}
        atomic_write_json(run_dir / "failure.json", failure)
        raise UserError(f"{task}/{framework}/{schedule} produced non-finite metrics (diverged?): "
                        f"recorded in {run_dir / 'failure.json'}")
    atomic_write_json(result_path, {**provenance, "status": "finished", "finished": utc_now(), "metrics": metrics})
    return run_dir
