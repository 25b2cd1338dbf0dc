"""`python -m pretrain submit`: the sbatch script of a multi-node job, and a two-process job run by submitit's
local executor (the SLURM code path up to sbatch) that is interrupted, requeued and resumes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.environ import temporary_environ
from tests.conftest import REPO, TINY_DATA, run_cli, run_main, set_args

# imported here without its logging set-up, before pretrain.submit imports it in this process (see test_sweep.py)
with temporary_environ(SUBMITIT_LOG_LEVEL="NOCONFIG"):
    import submitit  # noqa: F401


def test_slurm_submission_of_two_nodes_asks_for_what_torchrun_would_run(tmp_path):
    fake_bin = tmp_path / "bin"  # no cluster here: srun exists, sbatch keeps the script and answers a job id
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/script.sh\necho 'Submitted batch job 4242'\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    (tmp_path / "imagenet" / "train" / "n01440764").mkdir(parents=True)
    result = run_cli("-m", "pretrain", "submit", "--config", str(REPO / "pretrain/configs/look_imagenet_r50.yaml"),
                     "--data", "imagenet/train", "--out", "runs/look", "--nodes", "2", "--nproc-per-node", "4",
                     "--partition", "learnfair", "--time-min", "4320", "--account", "vision", "--constraint",
                     "volta32gb", "--cpus-per-task", "10", *set_args(["train.save_every_steps=500"]),
                     cwd=tmp_path, env_extra={"PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "submitted SLURM job 4242 (2 node(s) x 4 process(es))" in result.stdout
    script = (tmp_path / "script.sh").read_text()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=learnfair", "--time=4320",
                 "--account=vision", "--constraint=volta32gb", "--cpus-per-task=10", "--signal=USR2@120",
                 "--job-name=pretrain-look_imagenet_r50"):
        assert f"#SBATCH {line}\n" in script, line
    assert "srun" in script and "submitit.core._submit" in script
    # The job holds the resolved config with absolute paths (a job may start elsewhere) and runs the trainer.
    [pickled] = (tmp_path / "runs" / "look" / "submitit").rglob("*_submitted.pkl")
    job = pickle.loads(pickled.read_bytes()).function
    assert job.config.out_dir == str(tmp_path / "runs" / "look")
    assert job.config.data.root == str(tmp_path / "imagenet" / "train")
    assert job.config.train.save_every_steps == 500 and job.config.method_name == "look"
    assert not (tmp_path / "runs" / "look" / "checkpoints").exists()  # nothing trained on the login node

    from pretrain.cli import main

    bad = run_main(main, ["submit", "--config", str(REPO / "pretrain/configs/look_imagenet_r50.yaml"),
                          "--data", str(tmp_path / "nowhere"), "--nodes", "2", "--nproc-per-node", "4"])
    assert bad.returncode == 2 and "dataset folder not found" in bad.stderr and "Traceback" not in bad.stderr


def test_a_task_ended_for_a_requeue_leaves_its_process_at_once():
    """submitit ends a task for a requeue with SystemExit from its signal handler, and the job is requeued
    once every task has exited. What the interpreter's exit would wait for (here a thread that never ends;
    in a job, torch's gloo group, whose destructor can deadlock) must not keep the process alive."""
    script = ("import multiprocessing, sys, threading, time\n"
              "from pretrain.slurm import run_task\n"
              "threading.Thread(target=threading.Event().wait).start()\n"
              "def work():\n"
              "    rank = multiprocessing.get_context('fork').Process(target=time.sleep, args=(600,))\n"
              "    rank.start()\n"
              "    print(rank.pid, flush=True)\n"
              "    sys.exit(144)\n"
              "run_task(work)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 144, result.stderr[-2000:]
    rank = int(result.stdout)  # a process the task started (a one-node run's rank) ended with it
    assert not Path(f"/proc/{rank}").exists()


@pytest.mark.slow
def test_two_process_job_is_requeued_when_interrupted_and_resumes_from_its_checkpoint(generated_dir, tmp_path):
    from pretrain.config import load_config
    from pretrain.submit import submit

    out = tmp_path / "run"
    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml", [
        *TINY_DATA, f"data.generated_dir={generated_dir}", f"out_dir={out}", "train.batch_size=32", "train.device=cpu",
        "data.workers=0", "schedule.epochs=4", "train.save_every_steps=2", "train.log_every=1"])
    with temporary_environ(OMP_NUM_THREADS="1"):
        job = submit(config, "local", nodes=1, nproc_per_node=2)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not job.done():
        if last.is_file() and torch.load(last, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.1)
    assert not job.done(), "the job finished before it could be interrupted"
    saved = torch.load(last, weights_only=True)["step"]
    # What SLURM does before a preemption or the time limit: USR2 to every task of the job.
    controller = job._process.pid
    tasks = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(tasks) == 2
    for task in tasks:
        os.kill(int(task), signal.SIGUSR2)
    exported = job.results()[0]
    assert Path(exported).is_file() and Path(exported).parent == out / "export"

    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    start = next(r for r in rows if r.get("event") == "start")
    resume = next(r for r in rows if r.get("event") == "resume")
    assert start["world_size"] == 2 and resume["world_size"] == 2  # torchrun's environment, from submitit's
    assert saved <= resume["step"] < 16
    steps = [r["step"] for r in rows[rows.index(resume) + 1:] if "loss" in r]
    assert steps == list(range(resume["step"] + 1, 17))
    assert torch.load(last, weights_only=True)["step"] == 16
    job_log = "".join(p.read_text() for p in (out / "submitit").rglob("*_0_log.*"))
    assert "Calling checkpoint method" in job_log and "Requeued" in job_log, job_log[-2000:]
