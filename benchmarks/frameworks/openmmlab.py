"""What the MMDetection and MMSegmentation benchmarks share: config → settings → mmengine Runner → metrics.

A benchmark config (`configs/<framework>/<model>_<schedule>.py`) holds the protocol over the framework's
own packaged config. This module adds what belongs to the run: the converted backbone (`init_cfg`
Pretrained), the backbone's depth and the heads' input channels, the data preprocessor recorded with
the checkpoint, the dataset root, the work dir and the seed. What differs per task (dataset fields,
which heads read which stages, how metrics are named) stays in the task's module.
"""

from __future__ import annotations

import copy
import functools
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.environ import temporary_environ
from benchmarks.reference import Difference, Reference, differences, flatten
from benchmarks.spec import RunSpec, TrainResult, per_process_batch, split_opts
from pretrain.collector import collector_skips_what_is_alive
from pretrain.models import RESNET_DEPTHS

CONFIG_DIR = Path(__file__).parents[1] / "configs"


def load_config(framework: str, model: str, schedule: str):
    """The benchmark config as its file says it: a copy of the one this process read first (a run reads it 3
    times: the checks before anything runs, then the build; each read resolves the packaged base configs
    through the framework's ~300 model-index files, 0.2 s)."""
    return copy.deepcopy(_read_config(str(CONFIG_DIR / framework / f"{model}_{schedule}.py")))


@functools.cache
def _read_config(path: str):
    from mmengine.config import Config

    cfg = Config.fromfile(path)
    # mmengine formats the config text with yapf each time it logs, dumps or checkpoints it (8 times in a smoke
    # run): 11 s of a 23 s MMSegmentation smoke run here, 3.6 s of an MMDetection one. Unformatted, the text is
    # the same Python. (mmengine 0.10.7's fromfile ignores its own format_python_code=False for our configs.)
    object.__setattr__(cfg, "_format_python_code", False)
    return cfg


def protocol_config(framework: str, model: str, schedule: str, opts: tuple[str, ...] = ()):
    """The benchmark config with the user's overrides: what the protocol checks read."""
    cfg = load_config(framework, model, schedule)
    cfg.merge_from_dict(dict(_parse_opts(opts)))
    return cfg


# The parts of a config that make the protocol; the rest (hooks, logging, visualisation, runtime) is not compared.
PROTOCOL_SECTIONS = ("model", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg",
                     "test_cfg", "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator",
                     "auto_scale_lr")
# Leaves a run fills in (data, weights) or that change nothing in its result: never compared with a reference.
RUN_FIELDS = ("data_root", "ann_file", "data_prefix", "metainfo", "num_workers", "persistent_workers",
              "backend_args", "checkpoint", "batch_size")


def reference_config(reference: Reference):
    """The reference's configuration with mmengine's own config code: the packaged config it starts from,
    then what the reference's files set over it."""
    from mmengine.hub import get_config

    cfg = get_config(reference.base)  # a `package::path` inside the installed mmdet / mmseg
    cfg.merge_from_dict(dict(reference.overrides))
    return cfg


def _protocol_flat(cfg, global_batch: int) -> dict[str, Any]:
    """The protocol sections flattened, None (mmengine's "unset") dropped, the global batch as one setting."""
    tree = cfg.to_dict()
    flat = {key: value for key, value in flatten({k: tree[k] for k in PROTOCOL_SECTIONS if k in tree}).items()
            if value is not None}
    flat["global batch"] = global_batch
    return flat


def compare_with_reference(framework: str, model: str, schedule: str, reference: Reference) -> list[Difference]:
    """Every protocol setting where the benchmark config, as it runs an ImageNet-convention ResNet-50,
    differs from its reference (the reference's global batch: its per-GPU batch x its GPU count)."""
    from transfer.openmmlab import OpenMMLabTarget
    from transfer.source import imagenet_convention_backbone

    ours = load_config(framework, model, schedule)
    apply_backbone(ours, Path("weights.pth"), OpenMMLabTarget(framework, framework).settings(
        imagenet_convention_backbone()))
    theirs = reference_config(reference)
    if reference.reference_gpus is None:
        raise ValueError(f"{framework} reference {reference.base}: reference_gpus is needed for its global batch")
    return differences(_protocol_flat(ours, ours.global_batch_size),
                       _protocol_flat(theirs, theirs.train_dataloader.batch_size * reference.reference_gpus),
                       {**CONVERTER_SETTINGS, **reference.differences}, _is_run_field)


# What the converter states for every backbone, explained once for every OpenMMLab reference.
CONVERTER_SETTINGS = {"model.backbone.deep_stem": "stated by the converter: the plain stem our weights fit "
                                                  "(False, ResNet's default)"}


def _is_run_field(key: str) -> bool:
    # `_scope_` is mmengine's registry annotation of a packaged config, not a setting
    return key.endswith("._scope_") or any(part.split("[")[0] in RUN_FIELDS for part in key.split("."))


def apply_backbone(cfg, weights: Path, settings: dict[str, Any]) -> list[int]:
    """Point the backbone at the converted weights with the recorded settings; returns stage channels."""
    backbone = settings["model.backbone"]
    cfg.model.backbone.update(backbone)
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(weights))
    cfg.model.pop("pretrained", None)  # mmseg's base configs name a hub checkpoint there
    cfg.model.data_preprocessor.update(settings["model.data_preprocessor"])
    return RESNET_DEPTHS[backbone["depth"]].stage_channels


def set_dataset(cfg, data_root: Path, **dataset_fields: Any) -> None:
    """Set root and fields on the train/val/test datasets (ConcatDataset parts included)."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = cfg[loader].dataset
        for part in dataset.get("datasets", [dataset]):
            part.data_root = str(data_root)
            part.update(dataset_fields)


def finish_config(cfg, spec: RunSpec, what: str) -> None:
    """The run's part of the config: paths, seed, processes, the batch split, overrides, dry-run length."""
    cfg.work_dir = str(spec.work_dir)
    # the name of mmengine's logger, message hub and visualizer instances (process-wide, by name): the run's
    # identity, so that runs one after the other in one process never share them
    cfg.experiment_name = "-".join(spec.work_dir.parts[-6:-1])
    # one seed for the data order (mmengine's sampler syncs its own), a different one per rank for the
    # augmentations, as Detectron2 does
    cfg.randomness = dict(seed=spec.seed, diff_rank_seed=True)
    cfg.resume = True  # mmengine resumes from work_dir's last_checkpoint when there is one
    cfg.load_from = None
    distributed = spec.world_size > 1 and not spec.max_iters
    cfg.launcher = "pytorch" if distributed else "none"  # the process group exists already (benchmarks.launch)
    if spec.device == "cpu":
        cfg.env_cfg.dist_cfg = dict(backend="gloo")
        if distributed:  # DDP refuses device ids for a CPU module
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", broadcast_buffers=False,
                                         find_unused_parameters=False, device_ids=None)
    # loss, lr and eval metrics as TensorBoard event files too (work/<timestamp>/vis_data/), as Detectron2 writes
    backends = list(cfg.visualizer.get("vis_backends") or [])
    if not any(b.get("type") == "TensorboardVisBackend" for b in backends):
        cfg.visualizer.vis_backends = [*backends, dict(type="TensorboardVisBackend")]
    # the frameworks' configs name their visualizer 'visualizer', and mmengine keeps the name it is given: the
    # second run in a process would reuse the first one's, writing its events into the first run's folder
    cfg.visualizer.name = cfg.experiment_name
    cfg.merge_from_dict(dict(_parse_opts(spec.opts)))
    # the protocol's global batch, split over the processes (mmengine's batch_size is per process)
    cfg.train_dataloader.batch_size = per_process_batch(cfg.global_batch_size, spec.world_size, what)
    if cfg.get("auto_scale_lr"):
        cfg.auto_scale_lr.enable = False  # the lr is the protocol's for its global batch
    if spec.max_iters:  # dry run: a few iterations in this process, no evaluation, no checkpoint
        cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=spec.max_iters, val_interval=10**9)
        # no loader workers: for a few iterations they cost their start, and a loader left mid-epoch joins its
        # (persistent) workers with a timeout each when it is collected (10 s seen, at some later point)
        cfg.train_dataloader.num_workers, cfg.train_dataloader.persistent_workers = 0, False
        for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
            cfg[key] = None
        cfg.default_hooks.checkpoint = None
        cfg.resume = False


def _parse_opts(opts: tuple[str, ...]) -> list[tuple[str, Any]]:
    """`key=value` with the value read as a Python literal where it is one (mmengine's --cfg-options style)."""
    import ast

    parsed = []
    for key, text in split_opts(opts):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        parsed.append((key, value))
    return parsed


def protocol_record(cfg, spec: RunSpec) -> dict[str, Any]:
    loop = cfg.train_cfg
    if spec.max_iters:
        length = f"{spec.max_iters} (dry run)"
    elif "max_epochs" in loop:
        length = f"{loop.max_epochs} epochs"
    else:
        length = f"{loop.max_iters} iterations"
    return {"world_size": spec.world_size, "global_batch": cfg.global_batch_size,
            "per_process_batch": cfg.train_dataloader.batch_size, "lr": cfg.optim_wrapper.optimizer.lr,
            "length": length, "seed": spec.seed, "seed_per_rank": "seed + rank (diff_rank_seed)"}


def train_and_evaluate(cfg, spec: RunSpec, convert_metrics: Callable[[dict[str, float]], dict[str, dict[str, float]]]
                       ) -> TrainResult:
    """Train with mmengine's Runner (resuming if work_dir has a checkpoint), evaluate with the config's
    evaluator at the end of training, and return the metrics in the suite's shape."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from benchmarks.frameworks.cpu_distributed import convert_sync_batchnorm_for_cpu, needs_cpu_replacements

    class BenchmarkRunner(Runner):
        def wrap_model(self, model_wrapper_cfg, model):
            if needs_cpu_replacements(spec.device):
                model = convert_sync_batchnorm_for_cpu(model)
            return super().wrap_model(model_wrapper_cfg, model)

        def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
            if not Path(filename).resolve().is_relative_to(Path(self.work_dir).resolve()):
                raise ValueError(f"refusing to resume from {filename}: not in this run's work dir")
            # mmengine loads checkpoints with torch's weights_only default, which refuses its own training
            # state (message hub, history buffers); allowed only for this run's own work_dir checkpoint
            with temporary_environ(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"):
                super().resume(filename, *args, **kwargs)

    recorded: dict[str, float] = {}
    seconds: list[float] = []

    class RecordMetrics(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            self.start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            seconds.append(time.perf_counter() - self.start)

        def after_val_epoch(self, runner, metrics=None) -> None:
            recorded.clear()
            recorded.update(metrics or {})

    with collector_skips_what_is_alive():  # full collections: 0.7 s of a 6 s MMDetection smoke run, 1.3 s of MMSeg's
        runner = BenchmarkRunner.from_cfg(cfg)
        gc.freeze()  # and what building the runner imported and made
        runner.register_hook(RecordMetrics(), priority="LOWEST")
        runner.train()
        protocol = protocol_record(cfg, spec)
        if spec.max_iters:
            return TrainResult(cfg.pretty_text, {}, {**protocol, "seconds_per_iter": seconds})
        # A run resumed after its last iteration does not validate again; evaluate it here (on every rank).
        metrics = recorded or runner.test()
    return TrainResult(cfg.pretty_text, convert_metrics(metrics), protocol)



def protocol_check(task: str, framework: str, model: str) -> Callable[[str, tuple[str, ...], int], dict[str, Any]]:
    """A benchmark's check before anything is written: the overrides apply, the processes split the batch;
    returns the protocol as it will run."""
    def check(schedule: str, opts: tuple[str, ...], processes: int) -> dict[str, Any]:
        cfg = protocol_config(framework, model, schedule, opts)
        return {"global_batch": cfg.global_batch_size,
                "per_process_batch": per_process_batch(cfg.global_batch_size, processes, f"{task}/{framework}"),
                "lr": cfg.optim_wrapper.optimizer.lr, "length": _loop_length(cfg.train_cfg)}

    return check


def _loop_length(loop) -> str:
    return f"{loop.max_epochs} epochs" if "max_epochs" in loop else f"{loop.max_iters} iterations"


def schedule_length(framework: str, model: str) -> Callable[[str], str]:
    """A benchmark's real schedule length (epochs or iterations), read from its config."""
    return lambda schedule: _loop_length(load_config(framework, model, schedule).train_cfg)


def built_semantics(framework: str, model: str, schedule: str) -> dict[str, str]:
    """What the benchmark config builds for an ImageNet-convention ResNet-50 (benchmarks/built.py): the model's
    norm layer classes by part and its heads, the training resize (backend and interpolation, the transform's
    own defaults where the config names none), the framework versions."""
    import importlib
    import inspect

    import mmcv
    from mmengine.registry import DefaultScope

    from benchmarks.built import norm_classes
    from transfer.openmmlab import OpenMMLabTarget
    from transfer.source import imagenet_convention_backbone

    package = importlib.import_module(framework)
    registry = importlib.import_module(f"{framework}.registry")
    importlib.import_module(f"{framework}.utils").register_all_modules(init_default_scope=False)
    cfg = load_config(framework, model, schedule)
    apply_backbone(cfg, Path("weights.pth"), OpenMMLabTarget(framework, framework).settings(
        imagenet_convention_backbone()))
    with DefaultScope.overwrite_default_scope(framework):
        built_model = registry.MODELS.build(cfg.model)
        built = {"norm layers: backbone": norm_classes(built_model.backbone)}
        if getattr(built_model, "neck", None) is not None:
            built["norm layers: FPN"] = norm_classes(built_model.neck)
        if getattr(built_model, "roi_head", None) is not None:
            heads = built_model.roi_head
            built["RoI heads"] = type(heads).__name__
            built["norm layers: box head"] = norm_classes(heads.bbox_head)
            if getattr(heads, "mask_head", None) is not None:
                built["norm layers: mask head"] = norm_classes(heads.mask_head)
        else:
            built["segmentor"] = f"{type(built_model).__name__}, {type(built_model.decode_head).__name__}"
            built["norm layers: decode head"] = norm_classes(built_model.decode_head)
            if getattr(built_model, "auxiliary_head", None) is not None:
                built["norm layers: auxiliary head"] = norm_classes(built_model.auxiliary_head)
        built["precise BN: estimator"] = "none"
        resizes = []
        for step in _train_pipeline(cfg):
            kind = registry.TRANSFORMS.get(step["type"])
            if kind is None or "Resize" not in kind.__name__:
                continue
            resize = registry.TRANSFORMS.get(step.get("resize_type", "Resize")) if "resize_type" in inspect.signature(
                kind.__init__).parameters else kind
            defaults = inspect.signature(resize.__init__).parameters
            backend = step.get("backend", defaults["backend"].default)
            interpolation = step.get("interpolation", defaults["interpolation"].default)
            resizes.append(f"{kind.__name__}, {backend} {interpolation}")
    built["train resize"] = "; ".join(resizes) or "none"
    built["framework"] = f"{framework} {package.__version__} (mmcv {mmcv.__version__})"
    return built


def _train_pipeline(cfg) -> list[dict[str, Any]]:
    dataset = cfg.train_dataloader.dataset
    while "pipeline" not in dataset:  # wrappers: RepeatDataset's dataset, ConcatDataset's datasets (one pipeline)
        dataset = dataset["dataset"] if "dataset" in dataset else dataset["datasets"][0]
    return list(dataset["pipeline"])


def reference_comparison(framework: str, model: str) -> Callable[[str, Reference], list[Difference]]:
    """A benchmark's comparison of one schedule's config with its published reference."""
    return lambda schedule, reference: compare_with_reference(framework, model, schedule, reference)


def declaration_hooks(task: str, framework: str, model: str) -> dict[str, Callable[..., Any]]:
    """An OpenMMLab benchmark declaration's protocol check, schedule lengths, reference comparison and what it
    builds; each reads the config only when called."""
    return {"check_protocol": protocol_check(task, framework, model),
            "schedule_length": schedule_length(framework, model),
            "compare_reference": reference_comparison(framework, model),
            "built_semantics": lambda schedule: built_semantics(framework, model, schedule)}
