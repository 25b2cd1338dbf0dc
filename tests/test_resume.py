"""kill -9 in the middle of a run, rerun the same command: it resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import torch

from tests.background import background_command, background_result
from tests.conftest import REPO, TINY_DATA, TINY_TRAIN, set_args


@background_command("killed_and_rerun")
def _start_killed_and_rerun(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                            environ: dict[str, str]) -> Callable[[], dict]:
    """A LOOK pretraining killed with SIGKILL once its checkpoint has reached step 6, then the same command
    again (run while the other tests run: tests/background.py)."""
    run_dir = factory.mktemp("kill_9") / "run"
    overrides = [*TINY_DATA, *TINY_TRAIN, f"data.generated_dir={request.getfixturevalue('generated_dir')}",
                 f"out_dir={run_dir}", "schedule.epochs=6", "train.save_every_steps=2", "method.k=5"]
    args = [sys.executable, "-m", "pretrain", "train", "--config", str(REPO / "pretrain/configs/look_cpu.yaml"),
            *set_args(overrides)]
    env = {**environ, "PYTHONUNBUFFERED": "1"}

    def kill_and_rerun() -> dict:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = run_dir / "checkpoints" / "last.pt"
        deadline = time.time() + 900  # against a hang (it gets the cores the other tests leave idle)
        while time.time() < deadline and proc.poll() is None:
            if last.is_file() and torch.load(last, weights_only=True)["step"] >= 6:
                break
            time.sleep(0.05)
        ran_until_killed = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log = (run_dir / "log.jsonl").read_text()
        # Whatever instant the kill hit, the checkpoint on disk is whole and loadable.
        killed_at = torch.load(last, weights_only=True)["step"]
        rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        for checkpoint in last.parent.glob("epoch_*.pt"):  # not read; the disk is freed before the session ends
            checkpoint.unlink()
        return {"run_dir": run_dir, "ran_until_killed": ran_until_killed, "log_when_killed": log,
                "killed_at": killed_at, "rerun": rerun}

    return kill_and_rerun


killed_and_rerun = background_result("killed_and_rerun")


def test_kill_9_then_rerun_resumes_from_last_checkpoint(killed_and_rerun):
    run_dir, result = killed_and_rerun["run_dir"], killed_and_rerun["rerun"]
    last = run_dir / "checkpoints" / "last.pt"
    assert killed_and_rerun["ran_until_killed"], "the run ended before it could be killed"
    assert '"event": "done"' not in killed_and_rerun["log_when_killed"]
    killed_at = killed_and_rerun["killed_at"]
    assert 6 <= killed_at < 24

    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from {last} at step {killed_at}/24" in result.stdout
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    resume = next(e for e in events if e.get("event") == "resume")
    assert resume["step"] == killed_at
    # after the resume, training continued from the next step and finished all 24
    after = [e["step"] for e in events[events.index(resume) + 1:] if "loss" in e]
    assert after == list(range(killed_at + 1, 25))
    assert torch.load(last, weights_only=True)["step"] == 24
    assert list((run_dir / "export").glob("look_resnet18_generated_ep6-*.pth"))
