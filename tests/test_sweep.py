"""Sweeps: the grid from a YAML file, its state from the run directories, submitit's local executor running
it (the SLURM code path up to sbatch), a requeued job resuming from its checkpoint, and the sbatch script."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.cli import main as benchmarks_main
from benchmarks.environ import temporary_environ
from tests.background import background_command, background_result
from tests.conftest import IMAGENET_INPUT, random_backbone, run_cli, run_main

# submitit configures logging when imported (logging.config.dictConfig), which closes every logging handler
# open in the process: here pytest's and mmengine's log files. This pytest process imports it without that;
# its jobs (subprocesses) configure their logging as usual.
with temporary_environ(SUBMITIT_LOG_LEVEL="NOCONFIG"):
    import submitit


def _two_backbones(out: Path) -> list[Path]:
    # the probe reads images at the backbone's own size: 32 px (a probe of the generated data in a lane, one
    # thread: 5.2 s against 7.5 s at 64 px)
    small = {**IMAGENET_INPUT, "image_size": 32}
    return [random_backbone(out / "a", seed=1, input_convention=small),
            random_backbone(out / "b", method="look", seed=2, input_convention=small)]


@pytest.fixture(scope="module")
def two_backbones(tmp_path_factory) -> list[Path]:
    return _two_backbones(tmp_path_factory.mktemp("sweep_ckpts"))


def _sweep_file(path: Path, ckpts: list[Path], benchmarks: str, extra: str = "") -> Path:
    path.write_text(f"name: t\nout: {path.parent / 'bench'}\ncheckpoints:\n"
                    + "".join(f"  - {c.parent}/*.pth\n" for c in ckpts) + f"benchmarks:\n{benchmarks}{extra}")
    return path


def test_dry_run_prints_the_grid_with_the_state_of_every_run(two_backbones, tmp_path):
    from benchmarks.commands.sweep import load_sweep

    sweep_file = _sweep_file(tmp_path / "sweep.yaml", two_backbones,
                             "  - {task: probe, framework: frozen, schedule: standard}\n"
                             "  - {task: voc-det, framework: detectron2, schedule: smoke}\n", "seeds: 2\ndevice: cpu\n")
    sweep = load_sweep(sweep_file)
    assert len(sweep.runs) == 2 * 2 * 2 and {r.seeds_asked for r in sweep.runs} == {2}
    finished, failed, unfinished = sweep.runs[0].run_dir, sweep.runs[1].run_dir, sweep.runs[2].run_dir
    for run_dir in (finished, failed, unfinished):
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text("{}")
    (finished / "result.json").write_text(json.dumps({"status": "finished"}))
    (failed / "failure.json").write_text(json.dumps({"status": "failed"}))

    result = run_main(benchmarks_main, ["sweep", str(sweep_file), "--dry-run"])  # runs nothing: in this process
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith(("finished", "failed", "unfinished", "new")) for line in lines) == 8
    assert any(line.startswith("finished") and str(finished) in line for line in lines)
    assert any(line.startswith("failed") and str(failed) in line for line in lines)
    assert "8 runs: 1 finished, 1 unfinished, 1 failed, 5 new" in result.stdout
    assert "would run 7 of 8 run(s) here, 1 at a time" in result.stdout
    assert not (tmp_path / "bench" / "sweeps").exists()  # nothing submitted

    status = run_main(benchmarks_main, ["status", str(sweep_file)])
    assert status.returncode == 0 and "| probe | frozen | standard |" in status.stdout
    assert "| 1/2 | 0 | 1 | 0 |" in status.stdout  # the first checkpoint's probe: one finished, one failed


def test_bad_sweep_files_get_one_message(two_backbones, tmp_path):
    from benchmarks.commands.sweep import load_sweep
    from pretrain.errors import UserError

    probe = "  - {task: probe, framework: frozen, schedule: standard}\n"
    cases = [
        (probe + "seed: 3\n", "unknown key(s) seed"),
        ("  - {task: coco, framework: detectron2, schedule: 1x}\n", "'data' is required for the 1x schedule"),
        ("  - {task: coco, framework: caffe}\n", "no benchmark 'coco' for framework 'caffe'"),
        ("  - {task: coco, framework: detectron2, schedule: 1x, data: /nowhere}\n", "coco data not found under"),
        (probe + "slurm: {partition: gpu, gpus: 8}\n", "slurm: unknown key(s) gpus"),
        ("  - {task: coco, framework: mmdet, schedule: smoke, gpus: 4, nodes: 2}\n",
         "global batch of 2 images cannot be split over 8 processes"),
    ]
    for index, (benchmarks, message) in enumerate(cases):
        with pytest.raises(UserError, match=re.escape(message)):
            load_sweep(_sweep_file(tmp_path / f"bad{index}.yaml", two_backbones, benchmarks))
    missing = tmp_path / "nothing.yaml"
    missing.write_text(f"checkpoints: [{tmp_path}/none/*.pth]\nbenchmarks:\n{probe}")
    result = run_main(benchmarks_main, ["sweep", str(missing), "--dry-run"])  # one line, exit 2
    assert result.returncode == 2 and "nothing matches" in result.stderr and "Traceback" not in result.stderr
    two_nodes = _sweep_file(tmp_path / "nodes.yaml", two_backbones,
                            "  - {task: voc, framework: mmseg, schedule: smoke, nodes: 2}\n", "device: cpu\n")
    result = run_main(benchmarks_main, ["sweep", str(two_nodes)])  # refused before anything runs
    assert result.returncode == 2 and "ask for several nodes" in result.stderr and "--executor slurm" in result.stderr
    assert not (tmp_path / "bench" / "voc").exists()


def test_the_sbatch_script_asks_for_the_requested_resources(tmp_path, monkeypatch):
    from benchmarks.commands.sweep import Sweep, slurm_executor

    fake_bin = tmp_path / "bin"  # submitit looks for srun before it writes anything; no cluster here
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{__import__('os').environ['PATH']}")
    sweep = Sweep("r50", [], {"partition": "learnfair", "time_min": 4320, "cpus_per_task": 80}, tmp_path)
    overrides = {"account": "vision", "constraint": "volta32gb", "time_min": 600, "partition": None}
    one_node = slurm_executor(sweep, tmp_path / "%j", 8, 1, overrides)  # one task: the run starts its processes
    script = one_node._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--partition=learnfair", "--time=600", "--account=vision", "--constraint=volta32gb",
                 "--gpus-per-node=8", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=80",
                 "--job-name=bench-r50", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
    assert "srun" in script and "submitit.core._submit" in script
    two_nodes = slurm_executor(sweep, tmp_path / "%j", 4, 2, overrides)  # one task per GPU, each a rank
    script = two_nodes._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=20"):  # 80 per node
        assert f"#SBATCH {line}\n" in script, line


@background_command("local_sweep", processes=2)
def _start_local_sweep(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                       environ: dict[str, str]) -> Callable[[], dict]:
    """2 checkpoints x 2 benchmarks (the probe and the cheapest smoke, VOC segmentation in MMSegmentation,
    cut to 4 iterations, without a training checkpoint) x 2 seeds, 2 at a time, through submitit's
    LocalExecutor."""
    folder = factory.mktemp("local_sweep")
    backbones = _two_backbones(folder / "ckpts")
    sweep_file = _sweep_file(folder / "sweep.yaml", backbones,
                             "  - {task: probe, framework: frozen, schedule: standard}\n"
                             "  - {task: voc, framework: mmseg, schedule: smoke,\n"
                             "     opts: [train_cfg.max_iters=4, train_cfg.val_interval=4,\n"
                             "            default_hooks.checkpoint.save_last=False]}\n",  # 4 x 160 MB nobody reads
                             "seeds: 2\ndevice: cpu\n")
    return lambda: {"folder": folder, "sweep_file": sweep_file, "two_backbones": backbones,
                    "result": run_cli("-m", "benchmarks", "sweep", str(sweep_file), "--parallel", "2",
                                      timeout=1200, environ=environ)}


local_sweep = background_result("local_sweep")


@pytest.mark.slow
def test_a_local_sweep_runs_the_grid_and_collect_shows_its_table(local_sweep, tmp_path):
    """The sweep above (run while the other tests run); then one table each."""
    result, sweep_file, bench = local_sweep["result"], local_sweep["sweep_file"], local_sweep["folder"] / "bench"
    two_backbones = local_sweep["two_backbones"]
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "8 runs: 8 new" in result.stdout and "all 8 run(s) finished" in result.stdout
    # CPU runs: 2 lanes of 4 runs, each lane one process (imports and set-up once), every run reported done
    assert result.stdout.count("start  4 CPU run(s) in one process: ") == 2, result.stdout
    assert result.stdout.count("done   ") == 8, result.stdout
    again = run_main(benchmarks_main, ["sweep", str(sweep_file)])  # nothing to run: in this process
    assert again.returncode == 0 and "all runs finished; nothing to do" in again.stdout
    assert "8 runs: 8 finished" in again.stdout
    # without the sweep file, status reads every run directory under the output folder
    status = run_main(benchmarks_main, ["status", "--runs", str(bench)])
    assert status.returncode == 0 and status.stdout.count("| 2/2 | 0 | 0 | 0 |") == 4, status.stdout
    collected = run_main(benchmarks_main, ["collect", "--runs", str(bench), "--out",
                                           str(tmp_path / "results")])
    assert collected.returncode == 0, collected.stderr[-2000:]
    for table in ("probe.md", "voc.md"):
        text = (tmp_path / "results" / table).read_text()
        assert text.count("| 2 (0, 1) |") == 2, (table, text)  # one row per checkpoint, both seeds finished
        assert all(c.name.split(".")[0] in text for c in two_backbones)


def test_a_lane_of_local_cpu_runs_goes_on_past_a_failed_run(tmp_path, monkeypatch):
    """A lane runs its CPU runs one after the other in one process: a run that fails is returned with the one
    line that says why (a user error's message; otherwise the exception's type and last line), and the runs
    after it still run."""
    from benchmarks.commands.sweep import BenchmarkJob, BenchmarkLane, SweepRun
    from pretrain.errors import UserError

    runs = [SweepRun("voc", "mmseg", "smoke", tmp_path / f"{name}.pth", 0, 1, None, 1, "cpu", (), tmp_path)
            for name in ("refused", "crashed", "fine")]
    ran = []

    def call(job):
        ran.append(job.run.ckpt.stem)
        if job.run.ckpt.stem == "refused":
            raise UserError("checkpoint not found: refused.pth")
        if job.run.ckpt.stem == "crashed":
            raise RuntimeError("first line\nCUDA error: out of memory")
        return str(job.run.run_dir)

    monkeypatch.setattr(BenchmarkJob, "__call__", call)
    outcomes = BenchmarkLane(runs)()
    assert ran == ["refused", "crashed", "fine"]
    assert outcomes == ["checkpoint not found: refused.pth", "RuntimeError: CUDA error: out of memory", None]


@pytest.mark.slow
def test_an_interrupted_two_node_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A run over 2 nodes x 1 GPU is one task per rank with torchrun's environment (here the 2 tasks of a
    LocalExecutor job on this machine), and Detectron2 joins the group in each task itself (not through its
    launch()). USR2 to both tasks, as SLURM sends before a preemption or the time limit: requeued, resumed."""
    from benchmarks.commands.sweep import BenchmarkJob, SweepRun
    from pretrain.slurm import LOCAL_TIMEOUT_MIN

    monkeypatch.chdir(tmp_path)  # the embedded COCO data is generated under ./data/generated
    ckpt = random_backbone(tmp_path / "ckpt")
    # 8 iterations with a checkpoint every 3, through Detectron2's own overrides
    shorter = ("SOLVER.MAX_ITER=8", "SOLVER.STEPS=(6,)", "SOLVER.CHECKPOINT_PERIOD=3")
    run = SweepRun("coco", "detectron2", "smoke", ckpt, 0, 1, None, 1, "cpu", shorter, tmp_path / "bench", nodes=2)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=2)
    with temporary_environ(OMP_NUM_THREADS="1"):
        job = executor.submit(BenchmarkJob(run))
    last = run.run_dir / "work" / "last_checkpoint"  # Detectron2 names a checkpoint there once it is written

    def saved_once() -> bool:
        return last.is_file() and last.read_text().strip() == "model_0000002.pth"

    deadline = time.time() + 600
    while not saved_once() and not job.done() and time.time() < deadline:
        time.sleep(0.2)
    assert saved_once() and not job.done(), "the job finished before it could be interrupted"
    controller = job._process.pid
    tasks = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(tasks) == 2
    for task in tasks:
        os.kill(int(task), signal.SIGUSR2)
    assert [Path(r) for r in job.results()] == [run.run_dir, run.run_dir]
    record = json.loads((run.run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2
    assert record["protocol"]["per_process_batch"] == 1  # the smoke protocol's 2 images over the 2 ranks
    assert len(list((run.run_dir / "weights").glob("*.detectron2.pkl"))) == 1  # converted once, by rank 0
    log = (run.run_dir / "work" / "log.txt").read_text()
    assert "model_0000002.pth" in log and "Starting training from iteration 3" in log, log[-3000:]
    job_log = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_0_log.out"))
    assert "Calling checkpoint method" in job_log and "Requeued" in job_log, job_log[-2000:]


def test_a_sweep_entry_without_a_schedule_runs_the_schedule_its_data_calls_for(two_backbones, tmp_path):
    from benchmarks.commands.sweep import load_sweep
    from tests.documented_commands import user_disk

    data = user_disk(tmp_path)
    sweep = load_sweep(_sweep_file(tmp_path / "s.yaml", two_backbones,
                                   f"  - {{task: coco, framework: mmdet, data: {data / 'coco'}}}\n"
                                   f"  - {{task: voc-det, framework: detectron2, data: {data / 'VOCdevkit'}}}\n"
                                   "  - {task: voc, framework: mmseg}\n"))
    assert {(r.task, r.schedule) for r in sweep.runs} == {("coco", "1x"), ("voc-det", "24k"), ("voc", "smoke")}
