"""`make gpu-check` runs every part on the CPU (at tiny sizes here) and prints the whole table."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_gpu_check_prints_every_row_of_the_table(tmp_path):
    out = tmp_path / "gpu_check.md"
    result = run_cli("-m", "benchmarks.commands.gpu_check", "--quick", "--out", str(out),
                     "--work", str(tmp_path / "work"), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table in result.stdout
    for row in ("| torch |", "| card | none: CPU", "| mmcv CUDA ops built | no (CPU ops only) |",
                "| step: sl |", "| step: sl-mlp |", "| step: look (memory 1,281,167 x 128) |",
                "| step: look (memory 1,281,167 x 128, opt-in bfloat16 search) |", "| ratio look, bf16 search / sl |",
                "| step: sl, hand-written loop |", "| ratio look / sl |", "| ratio sl-mlp / sl |",
                "| ratio trainer / hand-written |", "| data vs step (one process) |",
                "| benchmark: coco detectron2 smoke, 2 iterations |", "| benchmark: coco mmdet smoke, 2 iterations |",
                "| benchmark: voc mmseg smoke, 2 iterations |"):
        assert row in table, row
    assert "images/s decoded + augmented at 32 px with 0 worker(s)" in table
    # where each step's time goes (the GPU's work and idle time on a GPU; here the host's operations)
    for method in ("sl", "sl-mlp", "look", "look, bf16 search", "sl, hand-written loop"):
        profile = re.search(rf"\| profile: {re.escape(method)} \| wall [\d.]+ ms, ([\d,]+) operations a step", table)
        assert profile and int(profile.group(1).replace(",", "")) > 20, method
    operations = {m: int(re.search(rf"\| profile: {m} \| wall [\d.]+ ms, ([\d,]+)", table).group(1).replace(",", ""))
                  for m in ("sl", "look")}
    assert operations["look"] > operations["sl"]  # the search, the loss and the memory update
