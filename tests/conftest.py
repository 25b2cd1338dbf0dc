from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.background import Background, background_command, background_result, session_order

REPO = Path(__file__).resolve().parents[1]

# A generated dataset small enough for many short runs: 4 classes x 2 sub-modes x 16 images, 32 px.
TINY_DATA = [
    "data.generated.num_classes=4", "data.generated.modes_per_class=2", "data.generated.train_per_mode=16",
    "data.generated.val_per_mode=2", "data.generated.image_size=32", "data.image_size=32",
]
TINY_TRAIN = ["model.arch=resnet18", "train.batch_size=32", "data.workers=0", "train.log_every=1",
              "schedule.warmup_epochs=0"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Python's full garbage collections scan every live object; in this process that is every imported
    framework and collected test (31 collections took 5.8 s of a run). What is alive when a test starts, once
    what the tests before it left is collected, is moved out of their way (`gc.freeze`)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def generated_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generated")


@pytest.fixture
def tiny_overrides(generated_dir, tmp_path) -> list[str]:
    """Overrides that turn any shipped config into a seconds-long run under tmp_path."""
    return [*TINY_DATA, *TINY_TRAIN, f"data.generated_dir={generated_dir}", f"out_dir={tmp_path / 'run'}"]


def run_cli(*args: str, timeout: float = 300, env_extra: dict[str, str] | None = None, cwd: Path = REPO,
            environ: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`python *args` to its end; the environment is this process's with 2 OpenMP threads (or `environ`: a
    background command's), with `env_extra`."""
    base = {**os.environ, "OMP_NUM_THREADS": "2"} if environ is None else environ
    env = {**base, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def run_main(main, argv: list[str]) -> subprocess.CompletedProcess:
    """A command's `main(argv)` in this process, with its exit status and output as `run_cli` returns them:
    the bad-input cases pay no interpreter start-up and imports (several seconds each)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


IMAGENET_INPUT = {"channel_order": "RGB", "pixel_range": [0, 1], "mean": [0.485, 0.456, 0.406],
                  "std": [0.229, 0.224, 0.225]}


def random_backbone(out_dir: Path, method: str = "sl", seed: int = 0, epochs: int = 1,
                    input_convention: dict | None = None) -> Path:
    """A randomly initialised ResNet-18 exported as this suite's backbone file (what the benchmarks read)."""
    import timm
    import torch

    from pretrain.checkpoint import export_backbone

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    meta = {"method": method, "arch": "resnet18", "dataset": "generated", "epochs": epochs, "dropped_heads": [],
            "input": input_convention or IMAGENET_INPUT}
    return export_backbone(model.state_dict(), meta, out_dir)


def tensorboard_tags(folder: Path) -> set[str]:
    """The scalar tags of every TensorBoard event file under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return {tag for events in folder.rglob("events.out.tfevents.*")
            for tag in EventAccumulator(str(events)).Reload().Tags()["scalars"]}



def first_difference(first: dict, second: dict, prefix: str = "") -> str | None:
    """The first tensor (in key order, nested dicts included) in which two states differ to the bit, as
    'key (max |difference| x)', or None when they are equal."""
    import torch

    if first.keys() != second.keys():
        return f"{prefix}keys {sorted(set(first) ^ set(second))}"
    for key, value in first.items():
        other = second[key]
        if isinstance(value, dict):
            found = first_difference(value, other, f"{prefix}{key}.")
            if found:
                return found
        elif isinstance(value, torch.Tensor) and not torch.equal(value, other):
            gap = (value.double() - other.double()).abs().max().item() if value.shape == other.shape else "shape"
            return f"{prefix}{key} (max |difference| {gap})"
    return None


def platform() -> str:
    """torch and the CPU features that decide which kernels run (for messages about this machine)."""
    import platform as host

    import torch

    flags: list[str] = []
    model = host.processor() or host.machine()
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                     model)
        cpu_flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        flags = [f for f in cpu_flags if f.startswith(("amx", "avx512_bf16", "avx512_fp16"))]
    return f"torch {torch.__version__}, {model}, CPU flags {' '.join(flags) or '(no amx / avx512 bf16)'}"


def require_deterministic(first: dict, second: dict, what: str) -> None:
    """Two uninterrupted runs of one config must agree to the bit before a resumed run is compared with them:
    where they do not, the platform's kernels are not deterministic, and that is what the test reports."""
    difference = first_difference(first, second)
    if difference:
        pytest.fail(f"this platform is not deterministic for {what}: two uninterrupted runs of the same config "
                    f"differ in {difference} ({platform()}), so an exact resume cannot be checked here",
                    pytrace=False)


# Every benchmark in 2 CPU processes (gloo), 4 of the smoke schedule's 10 iterations through each framework's
# own override mechanism (mmengine logging every 2, so that loss and lr reach the event files): run once per
# session, read by test_multiprocess.py (the multi-process protocol) and test_benchmarks.py (each framework's
# resolved config, metrics and event files).
TWO_PROCESS_BENCHMARKS = [("coco", "detectron2"), ("coco", "mmdet"), ("voc", "mmseg"), ("ade20k", "mmseg")]
# started by torchrun (as on a cluster: MMSegmentation's two benchmarks one after the other in the same 2
# processes, not 2 new ones for each); the others by `--procs 2` (Detectron2's launch, torch multiprocessing)
UNDER_TORCHRUN = {("voc", "mmseg"), ("ade20k", "mmseg")}
TORCHRUN_2 = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")  # --standalone: a free port
SHORTER = {"detectron2": ("SOLVER.MAX_ITER=4", "SOLVER.STEPS=(3,)"),
           "mmdet": ("train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.logger.interval=2"),
           "mmseg": ("train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.logger.interval=2")}
# not ImageNet's statistics, so that the frameworks' settings visibly come from the checkpoint's metadata
SMOKE_INPUT = {"channel_order": "RGB", "pixel_range": [0, 1], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def drop_checkpoints(out: Path) -> dict[Path, list[str]]:
    """Delete the training checkpoints (`work/*.pth`) of the runs under `out`, returning each work folder's
    listing as it was. No test reads them once a run is over, and the session's shared runs would otherwise
    hold about 2 GB of disk until the last test (CI's disk is smaller than that)."""
    listings = {}
    for work in sorted(out.rglob("work")):
        listings[work] = sorted(p.name for p in work.iterdir())
        for checkpoint in work.glob("*.pth"):
            checkpoint.unlink()
    return listings


@pytest.fixture(scope="session")
def smoke_backbone(tmp_path_factory) -> Path:
    return random_backbone(tmp_path_factory.mktemp("smoke_ckpt"), method="look", seed=1, epochs=2,
                           input_convention=SMOKE_INPUT)


def _two_process_runs(ckpt: Path, out: Path, environ: dict[str, str]) -> dict:
    """One command per framework: its benchmarks one after the other (MMSegmentation's two in one command,
    under torchrun in the same 2 processes: the second run must not inherit the first one's framework state)."""
    results, work_files = {}, {}
    for framework in dict.fromkeys(f for _, f in TWO_PROCESS_BENCHMARKS):
        tasks = [t for t, f in TWO_PROCESS_BENCHMARKS if f == framework]
        # a hang (a rank left waiting in a collective) ends as a timeout, i.e. a failed test
        torchrun = any((t, framework) in UNDER_TORCHRUN for t in tasks)
        result = run_cli(
            *(TORCHRUN_2 if torchrun else ()), "-m", "benchmarks", "run", *tasks, "--ckpt", str(ckpt),
            "--framework", framework, "--device", "cpu", *(() if torchrun else ("--procs", "2")),  # no data: smoke
            "--out", str(out), "--opts", *SHORTER[framework], timeout=600, environ=environ)
        results.update({(task, framework): result for task in tasks})
        for work, names in drop_checkpoints(out).items():  # after each command: the tests beside it need disk
            work_files.setdefault(work, names)  # as the run left it
    return {"ckpt": ckpt, "out": out, "results": results, "work_files": work_files}


# Detectron2's two smoke benchmarks in one process, one after the other (`benchmarks run coco voc-det`), 4 of
# the smoke schedule's 10 iterations, as in 2 processes: read by test_benchmarks.py (COCO) and
# test_voc_detection.py (VOC07+12). (A periodic checkpoint and the resume from it: test_sweep.py's requeue.)
DETECTRON2_SHORTER = SHORTER["detectron2"]


def _detectron2_runs(home: Path, ckpt: Path, environ: dict[str, str]) -> dict:
    out = home / "bench"  # its embedded data is generated under home/data/generated
    result = run_cli("-m", "benchmarks", "run", "coco", "voc-det", "--ckpt", str(ckpt), "--framework", "detectron2",
                     "--schedule", "smoke", "--seed", "0", "--out", str(out), "--opts", *DETECTRON2_SHORTER,
                     timeout=900, cwd=home, environ=environ)
    return {"home": home, "ckpt": ckpt, "out": out, "result": result, "work_files": drop_checkpoints(out)}


def _openmmlab_runs(ckpt: Path, out: Path, environ: dict[str, str]) -> dict:
    """A VOC smoke run in MMSegmentation, killed after its first checkpoint and resumed by rerunning the same
    command. (Each OpenMMLab benchmark also runs in 2 processes: `two_process_runs`.)"""
    import signal
    import time

    command = ["-m", "benchmarks", "run", "voc", "--ckpt", str(ckpt), "--framework", "mmseg", "--schedule", "smoke",
               "--out", str(out)]
    voc_dir = out / "voc" / "mmseg" / "smoke" / ckpt.name.split(".")[0] / "seed0"
    process = subprocess.Popen([sys.executable, *command], cwd=REPO, env=environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    deadline = time.time() + 900  # against a hang (a background command gets the cores the tests leave idle)
    # mmengine names the checkpoint in last_checkpoint once it is completely written
    while not (voc_dir / "work" / "last_checkpoint").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at_5 = not (voc_dir / "result.json").exists()
    resumed = run_cli(*command, timeout=600, environ=environ)
    return {"ckpt": ckpt, "out": out, "resumed": resumed, "killed_at_5": killed_at_5,
            "work_files": drop_checkpoints(out)}


@background_command("openmmlab_runs")
def _start_openmmlab_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                           environ: dict[str, str]) -> Callable[[], dict]:
    ckpt, out = request.getfixturevalue("smoke_backbone"), factory.mktemp("openmmlab") / "bench"
    return lambda: _openmmlab_runs(ckpt, out, environ)


openmmlab_runs = background_result("openmmlab_runs")


@background_command("two_process_runs", processes=2)
def _start_two_process_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                           environ: dict[str, str]) -> Callable[[], dict]:
    ckpt, out = request.getfixturevalue("smoke_backbone"), factory.mktemp("multiprocess") / "bench"
    return lambda: _two_process_runs(ckpt, out, environ)


two_process_runs = background_result("two_process_runs")


@background_command("detectron2_runs")
def _start_detectron2_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                           environ: dict[str, str]) -> Callable[[], dict]:
    home = factory.mktemp("detectron2_runs")
    ckpt = random_backbone(home / "ckpt")
    return lambda: _detectron2_runs(home, ckpt, environ)


detectron2_runs = background_result("detectron2_runs")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_order(items)


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory) -> Iterator[Background]:
    """The session's long benchmark commands (tests/background.py), started when its first test starts."""
    with Background(request, tmp_path_factory) as commands:
        commands.start_what_is_read()
        yield commands


@pytest.fixture(autouse=True)
def threads_back_when_the_background_is_done(background: Background) -> None:
    background.threads_back_when_done()


def detectron2_run_dir(runs: dict, task: str) -> Path:
    from benchmarks.runner import opts_suffix

    name = runs["ckpt"].name.split(".")[0] + opts_suffix(DETECTRON2_SHORTER)
    return runs["out"] / task / "detectron2" / "smoke" / name / "seed0"


def two_process_run_dir(runs: dict, task: str, framework: str) -> Path:
    from benchmarks.runner import opts_suffix

    name = runs["ckpt"].name.split(".")[0] + opts_suffix(SHORTER[framework])
    return runs["out"] / task / framework / "smoke" / name / "seed0"
