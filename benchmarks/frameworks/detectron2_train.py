"""Fine-tuning in Detectron2, shared by its benchmarks: config, training, evaluation, the run's record.

A benchmark is a `Detectron2Protocol`: detectron2's model-zoo config it starts from, our schedule files
(`configs/detectron2/<stem>_<schedule>.yaml`), how its data is registered and which evaluator scores it.
The config is the zoo's, then our schedule file, then the settings recorded with the converted
checkpoint (depth, pixel mean/std, input format, stride placement), then the protocol's adjustments
for that backbone, then the run (datasets, device, seed), then the user's `--opts` through Detectron2's
own `merge_from_list`. `SOLVER.IMS_PER_BATCH` is Detectron2's global batch: it stays the protocol's
whatever the process count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.reference import Difference, Reference, differences, flatten
from benchmarks.spec import RunSpec, TrainResult, per_process_batch, split_opts

CONFIG_DIR = Path(__file__).parents[1] / "configs" / "detectron2"


@dataclass(frozen=True)
class Datasets:
    train: tuple[str, ...]  # names registered in detectron2's DatasetCatalog
    test: str
    num_classes: int


@dataclass(frozen=True)
class Detectron2Protocol:
    task: str
    zoo_config: str  # detectron2's model-zoo config the protocol starts from
    config_stem: str  # our schedule files: CONFIG_DIR / f"{config_stem}_{schedule}.yaml"
    register: Callable[[Path], Datasets]  # the data root -> its registered datasets
    evaluator: Callable[[str, str], Any]  # (dataset name, output dir) -> a DatasetEvaluator
    adapt: Callable[[Any], None] | None = None  # changes for the backbone at hand (after the checkpoint settings)


def protocol_config(protocol: Detectron2Protocol, schedule: str, settings: dict[str, Any] | None = None,
                    opts: tuple[str, ...] = ()):
    """The protocol's config before the run's data and paths: zoo config, schedule file, checkpoint settings,
    overrides. Also what the protocol comparison and the dry run read."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from transfer.detectron2 import apply_settings

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(protocol.zoo_config))
    cfg.merge_from_file(str(CONFIG_DIR / f"{protocol.config_stem}_{schedule}.yaml"))
    if settings:
        apply_settings(cfg, settings)
    if protocol.adapt is not None:
        protocol.adapt(cfg)
    cfg.merge_from_list([item for pair in split_opts(opts) for item in pair])
    return cfg


# Settings a run fills in (data, weights, outputs) or that change nothing in its result: never compared with
# a reference configuration.
RUN_KEYS = ("MODEL.WEIGHTS", "MODEL.DEVICE", "OUTPUT_DIR", "SEED", "DATASETS.TRAIN", "DATASETS.TEST",
            "MODEL.ROI_HEADS.NUM_CLASSES", "SOLVER.CHECKPOINT_PERIOD", "VERSION")


def reference_config(reference: Reference):
    """The reference's configuration with Detectron2's own config code: its defaults (those of its time where
    it declares them, else `get_cfg`'s), the model-zoo file it starts from (if any), then what its files set."""
    from detectron2 import model_zoo
    from detectron2.config import CfgNode, get_cfg

    if reference.defaults:
        with open(CONFIG_DIR.parent / reference.defaults) as f:
            cfg = CfgNode.load_cfg(f)
    else:
        cfg = get_cfg()
    if reference.base:
        cfg.merge_from_file(model_zoo.get_config_file(reference.base))
    cfg.merge_from_list([item for key, value in reference.overrides.items() for item in (key, value)])
    return cfg


def compare_with_reference(protocol: Detectron2Protocol, schedule: str, reference: Reference) -> list[Difference]:
    """Every setting where the protocol, as it runs an ImageNet-convention ResNet-50, differs from its reference."""
    from transfer.detectron2 import Detectron2Target
    from transfer.source import imagenet_convention_backbone

    ours = protocol_config(protocol, schedule, Detectron2Target().settings(imagenet_convention_backbone()))
    return differences(flatten(ours), flatten(reference_config(reference)), reference.differences,
                       ignored=lambda key: key in RUN_KEYS)


def built_semantics(protocol: Detectron2Protocol, schedule: str) -> dict[str, str]:
    """What the protocol builds for an ImageNet-convention ResNet-50 (benchmarks/built.py): the model's norm layer
    classes by part and its RoI heads, the precise-BN estimator, the training resize, the framework version."""
    import detectron2
    from detectron2.data.detection_utils import build_augmentation
    from detectron2.data.transforms import ResizeShortestEdge
    from detectron2.modeling import build_model
    from PIL import Image

    from benchmarks.built import norm_classes
    from benchmarks.frameworks.precise_bn import ESTIMATOR
    from transfer.detectron2 import Detectron2Target
    from transfer.source import imagenet_convention_backbone

    cfg = protocol_config(protocol, schedule, Detectron2Target().settings(imagenet_convention_backbone()))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    built = {"norm layers: backbone": norm_classes(bottom_up)}
    if bottom_up is not model.backbone:
        built["norm layers: FPN"] = norm_classes(model.backbone, leave_out=bottom_up)
    heads = model.roi_heads
    built["RoI heads"] = type(heads).__name__
    for part, aspect in (("res5", "norm layers: RoI head (res5)"), ("box_head", "norm layers: box head"),
                         ("mask_head", "norm layers: mask head")):
        if getattr(heads, part, None) is not None:
            built[aspect] = norm_classes(getattr(heads, part))
    enabled = cfg.TEST.PRECISE_BN.ENABLED
    built["precise BN: estimator"] = ESTIMATOR if enabled else "none"
    built["precise BN: across ranks"] = ACROSS_RANKS if enabled else "none"
    resize = next(a for a in build_augmentation(cfg, is_train=True) if isinstance(a, ResizeShortestEdge))
    built["train resize"] = f"ResizeShortestEdge, PIL {Image.Resampling(resize.interp).name.lower()}"
    built["framework"] = f"detectron2 {detectron2.__version__}"
    return built


ACROSS_RANKS = "averaged over the ranks (one all-reduce: the same buffers on every rank)"


def build_config(spec: RunSpec, protocol: Detectron2Protocol):
    datasets = protocol.register(spec.data_root)
    cfg = protocol_config(protocol, spec.schedule, spec.settings)
    cfg.MODEL.WEIGHTS = str(spec.weights)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = datasets.num_classes
    cfg.MODEL.DEVICE = spec.device
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = datasets.train, (datasets.test,)
    cfg.OUTPUT_DIR = str(spec.work_dir)
    cfg.SEED = spec.seed
    # the user's overrides come last, so that they win over everything above
    cfg.merge_from_list([item for pair in split_opts(spec.opts) for item in pair])
    per_process = per_process_batch(cfg.SOLVER.IMS_PER_BATCH, spec.world_size, f"{protocol.task}/detectron2")
    if spec.max_iters:  # dry run in one process: the per-process batch of `world_size` GPUs, no evaluation
        cfg.DATALOADER.NUM_WORKERS = 0  # for a few iterations, loader workers cost only their start and stop
        cfg.SOLVER.IMS_PER_BATCH = per_process
        cfg.SOLVER.MAX_ITER = spec.max_iters
        cfg.DATASETS.TEST = ()
        cfg.TEST.PRECISE_BN.ENABLED = False
        cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.freeze()
    return cfg


def check_protocol(protocol: Detectron2Protocol, schedule: str, opts: tuple[str, ...], processes: int
                   ) -> dict[str, Any]:
    """The protocol as it will run in `processes` processes; refuses --opts Detectron2 refuses, and a process
    count that does not divide the global batch."""
    from pretrain.errors import UserError

    try:
        cfg = protocol_config(protocol, schedule, opts=opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise UserError(f"--opts: Detectron2 refuses {' '.join(opts)}: {e}") from None
    return {"global_batch": cfg.SOLVER.IMS_PER_BATCH,
            "per_process_batch": per_process_batch(cfg.SOLVER.IMS_PER_BATCH, processes, f"{protocol.task}/detectron2"),
            "lr": cfg.SOLVER.BASE_LR, "length": f"{cfg.SOLVER.MAX_ITER} iterations"}


def schedule_length(protocol: Detectron2Protocol, schedule: str) -> str:
    return f"{protocol_config(protocol, schedule).SOLVER.MAX_ITER} iterations"


def declaration_hooks(protocol: Callable[[], Detectron2Protocol]) -> dict[str, Callable[..., Any]]:
    """A Detectron2 benchmark declaration's protocol check, schedule lengths and reference comparison.
    `protocol` imports its module when called, so that declaring the benchmark does not import Detectron2."""
    return {"check_protocol": lambda schedule, opts, processes: check_protocol(protocol(), schedule, opts, processes),
            "schedule_length": lambda schedule: schedule_length(protocol(), schedule),
            "compare_reference": lambda schedule, reference: compare_with_reference(protocol(), schedule, reference),
            "built_semantics": lambda schedule: built_semantics(protocol(), schedule)}


def protocol_record(cfg, spec: RunSpec) -> dict[str, Any]:
    global_batch = cfg.SOLVER.IMS_PER_BATCH * (spec.world_size if spec.max_iters else 1)
    return {"world_size": spec.world_size, "global_batch": global_batch,
            "per_process_batch": global_batch // spec.world_size, "lr": cfg.SOLVER.BASE_LR,
            "length": f"{cfg.SOLVER.MAX_ITER} iterations" if not spec.max_iters else f"{spec.max_iters} (dry run)",
            "lr_steps": list(cfg.SOLVER.STEPS), "seed": spec.seed, "seed_per_rank": "seed + rank"}


@contextlib.contextmanager
def _ddp_without_device_ids(device: str) -> Iterator[None]:
    """DefaultTrainer wraps the model with `device_ids=[local rank]`, which DDP refuses for a CPU module."""
    if device != "cpu":
        yield
        return
    from detectron2.engine import defaults

    original = defaults.create_ddp_model
    defaults.create_ddp_model = lambda model, **kwargs: original(model, **{**kwargs, "device_ids": None})
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def precise_bn_hook(period: int, model: Any, data_loader: Any, num_iter: int) -> Any:
    """What Detectron2's PreciseBN hook does (after the last iteration, and every `period` iterations if
    > 0), with the statistics from `benchmarks.frameworks.precise_bn`: combined over all ranks, so that every rank
    evaluates with the same buffers. It also finds the BN layers fvcore's list misses (CpuSyncBatchNorm)."""
    import logging

    from detectron2.engine import HookBase
    from detectron2.utils import comm
    from detectron2.utils.events import EventStorage

    from benchmarks.frameworks.precise_bn import buffer_digest, update_bn_stats

    class PreciseBN(HookBase):
        def __init__(self) -> None:
            self._data_iter = None

        def after_step(self) -> None:
            next_iter = self.trainer.iter + 1
            if next_iter == self.trainer.max_iter or (period > 0 and next_iter % period == 0):
                self.update_stats()

        def update_stats(self) -> None:
            if self._data_iter is None:
                self._data_iter = iter(data_loader)
            with EventStorage():  # the forward passes' events are discarded, as Detectron2's hook does
                layers = update_bn_stats(model, self._data_iter, num_iter)
            # under Detectron2's logger, so that it lands in each rank's log file
            logging.getLogger("detectron2.precise_bn").info(
                f"precise BN: {layers} BN layers from {num_iter} iterations on each of {comm.get_world_size()} "
                f"rank(s), combined over the ranks; buffers {buffer_digest(model)}")

    return PreciseBN()


def seeded_trainer(cfg, evaluator: Callable[[str, str], Any]) -> Any:
    """Detectron2's DefaultTrainer for `cfg` (model, optimizer, data loader, hooks), built after seeding every
    generator with `cfg.SEED` + rank, as Detectron2's default_setup does. Nothing built before the weights are
    loaded (`resume_or_load`) depends on them: one seed gives any two checkpoints of one architecture the same
    data order, augmentations and new layers (tests/test_voc_detection.py shows it)."""
    from detectron2.engine import DefaultTrainer, hooks
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from benchmarks.frameworks.cpu_distributed import convert_sync_batchnorm_for_cpu, needs_cpu_replacements
    from benchmarks.frameworks.precise_bn import bn_layers

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            model = super().build_model(cfg)
            return convert_sync_batchnorm_for_cpu(model) if needs_cpu_replacements(cfg.MODEL.DEVICE) else model

        def build_hooks(self):
            # Detectron2's precise BN leaves every rank with its own statistics (and skips CpuSyncBatchNorm):
            # its hooks without it, ours where it would be (after the LR scheduler, before the checkpointer)
            cfg = self.cfg
            enabled = cfg.TEST.PRECISE_BN.ENABLED
            cfg.defrost()
            cfg.TEST.PRECISE_BN.ENABLED = False
            try:
                built = super().build_hooks()
            finally:
                cfg.TEST.PRECISE_BN.ENABLED = enabled
                cfg.freeze()
            if enabled and bn_layers(self.model):
                loader_cfg = cfg.clone()
                loader_cfg.defrost()
                loader_cfg.DATALOADER.NUM_WORKERS = 0  # as Detectron2 builds its precise-BN loader
                after = next(i for i, hook in enumerate(built) if isinstance(hook, hooks.LRScheduler)) + 1
                built.insert(after, precise_bn_hook(cfg.TEST.EVAL_PERIOD, self.model,
                                                    self.build_train_loader(loader_cfg), cfg.TEST.PRECISE_BN.NUM_ITER))
            return built

        @classmethod
        def build_evaluator(cls, cfg, dataset_name):
            return evaluator(dataset_name, cfg.OUTPUT_DIR)

    # as Detectron2's default_setup: each process its own seed, so that augmentations differ between GPUs
    seed_all_rng(cfg.SEED + comm.get_rank())
    with _ddp_without_device_ids(cfg.MODEL.DEVICE):
        return Trainer(cfg)


def train_and_evaluate(cfg, evaluator: Callable[[str, str], Any]) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Train (resuming from OUTPUT_DIR's last checkpoint if there is one) and evaluate on the test set.
    Returns the metrics (the same on every rank's way out; rank 0's are the real ones) and step times."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    class StepTimes(HookBase):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def before_step(self) -> None:
            self.start = time.perf_counter()

        def after_step(self) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    trainer = seeded_trainer(cfg, evaluator)
    times = StepTimes()
    trainer.register_hooks([times])
    trainer.resume_or_load(resume=True)
    trainer.train()
    # DefaultTrainer's EvalHook evaluates after the last iteration on every rank and keeps the results on
    # the trainer (rank 0 gets the metrics, the others {} after the gather). Every rank leaves the same way:
    # a second evaluation on some ranks only would wait forever in its collectives.
    if hasattr(trainer, "_last_eval_results"):
        results = trainer._last_eval_results
    else:
        results = type(trainer).test(cfg, trainer.model)
    comm.synchronize()
    metrics = {task: {metric: float(value) for metric, value in scores.items()}
               for task, scores in (results or {}).items()}
    return metrics, times.seconds


def _log_to(log_file: Path) -> None:
    """Detectron2's logger writing to this run's log (and the console) only. Its setup_logger adds handlers
    at each call with other arguments: in a process that runs several runs, each run's lines would also
    land in every earlier run's log, and each console line would repeat once per run."""
    import logging

    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    logger = logging.getLogger("detectron2")
    for handler in list(logger.handlers):
        handler.flush()
        logger.removeHandler(handler)  # not closed: Detectron2 caches its log streams by file name
    setup_logger.cache_clear()
    setup_logger(output=str(log_file), distributed_rank=comm.get_rank())


def run(spec: RunSpec, protocol: Detectron2Protocol) -> TrainResult:
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    _log_to(spec.work_dir / "log.txt")
    cfg = build_config(spec, protocol)
    metrics, seconds = train_and_evaluate(cfg, protocol.evaluator)
    protocol = protocol_record(cfg, spec)
    if spec.max_iters:
        protocol["seconds_per_iter"] = seconds
    return TrainResult(cfg.dump(), metrics, protocol)
