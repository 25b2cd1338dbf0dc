"""kill -9 in the middle of a run, rerun the same command: it resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import REPO, set_args


def test_kill_9_then_rerun_resumes_from_last_checkpoint(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "pretrain", "train", "--config", str(REPO / "pretrain/configs/look_cpu.yaml"),
            *set_args([*tiny_overrides, "schedule.epochs=6", "train.save_every_steps=2", "method.k=5"])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    saved_step = 0
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            saved_step = torch.load(last, weights_only=True)["step"]
            if saved_step >= 6:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert '"event": "done"' not in (run_dir / "log.jsonl").read_text()
    # Whatever instant the kill hit, the checkpoint on disk is whole and loadable.
    killed_at = torch.load(last, weights_only=True)
    assert 6 <= killed_at["step"] < 24

    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from {last} at step {killed_at['step']}/24" in result.stdout
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    resume = next(e for e in events if e.get("event") == "resume")
    assert resume["step"] == killed_at["step"]
    # after the resume, training continued from the next step and finished all 24
    after = [e["step"] for e in events[events.index(resume) + 1:] if "loss" in e]
    assert after == list(range(killed_at["step"] + 1, 25))
    assert torch.load(last, weights_only=True)["step"] == 24
    assert list((run_dir / "export").glob("look_resnet18_generated_ep6-*.pth"))
