"""`make gpu-check` runs every part on the CPU (at tiny sizes here) and prints the whole table."""

from __future__ import annotations

import re

import pytest

from benchmarks.commands import gpu_check
from tests.conftest import run_main


@pytest.mark.slow
def test_gpu_check_prints_every_row_of_the_table(tmp_path):
    out = tmp_path / "gpu_check.md"
    result = run_main(gpu_check.main, ["--quick", "--out", str(out), "--work", str(tmp_path / "work")])
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
    # both data paths' images/s and the CPU cores they keep busy (/proc), beside the step's rate and the goal
    assert re.search(r"\| data: file path, PIL in 0 worker\(s\) \| \d+ images/s, [\d.]+ CPU cores busy \|", table)
    assert re.search(r"\| data: GPU path \(its code on the CPU: libjpeg-turbo in this process\), 0 worker\(s\) read "
                     r"the files \| \d+ images/s, [\d.]+ CPU cores busy \|", table)
    # on the CPU the GPU path decodes with libjpeg-turbo, as PIL does: the same pixels
    assert "| data: GPU path's decoded pixels against PIL's | 16 images: max 0 grey levels, mean 0.000 |" in table
    assert re.search(r"GPU path [\d.]+ x the step from [\d.]+ CPU cores busy \(goal ≥ 1.2 x from ≤ 4 cores, on a "
                     r"GPU\)", table)
    # the loader read generated ImageNet-like JPEGs, and each data path's CPU cost is given in cores per GPU
    assert "imagenet-like-" in table
    assert re.search(r"\| data: CPU per image, one thread \(pretrain.timers.data_time\) \| decode \+ augment PIL "
                     r"[\d.]+ ms, [\d.]+ cores; torchvision.io [\d.]+ ms, [\d.]+ cores; "
                     r"GPU path's workers \(file read\) [\d.]+ ms, [\d.]+ cores to feed", table)
    # where each step's time goes (the GPU's work and idle time on a GPU; here the host's operations)
    for method in ("sl", "sl-mlp", "look", "look, bf16 search", "sl, hand-written loop"):
        profile = re.search(rf"\| profile: {re.escape(method)} \| wall [\d.]+ ms, ([\d,]+) operations a step", table)
        assert profile and int(profile.group(1).replace(",", "")) > 20, method
    operations = {m: int(re.search(rf"\| profile: {m} \| wall [\d.]+ ms, ([\d,]+)", table).group(1).replace(",", ""))
                  for m in ("sl", "look")}
    assert operations["look"] > operations["sl"]  # the search, the loss and the memory update


def test_gpu_idle_time_is_put_on_what_the_host_was_doing_meanwhile():
    """On a GPU the profile row says where the GPU waited: a gap between kernels inside a timed step goes to the
    outermost operator(s) the host was in, the rest to the host between operators; runtime calls that wait for
    the GPU are counted by the operator that made them (checked here on a hand-made timeline, in µs)."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from pretrain.timers.step_time import TIMED_STEP, host_waits, idle_during

    def event(name, start, end, device=DeviceType.CPU, parent=None):
        return SimpleNamespace(name=name, device_type=device, time_range=SimpleNamespace(start=start, end=end),
                               cpu_parent=parent)

    step = event(TIMED_STEP, 0, 100)
    mm, topk = event("aten::mm", 5, 20, parent=step), event("aten::topk", 40, 70, parent=step)
    item = event("aten::item", 44, 69, parent=topk)
    events = [step, mm, topk, item, event("cudaStreamSynchronize", 45, 69, parent=item),
              event("cudaStreamSynchronize", 120, 130),  # outside the timed step: not counted
              event(TIMED_STEP, 8, 92, DeviceType.CUDA),  # the profiler's copy of the range on the GPU: not work
              event("kernel 1", 10, 30, DeviceType.CUDA), event("kernel 2", 60, 90, DeviceType.CUDA),
              event("kernel 3", 110, 115, DeviceType.CUDA)]
    idle = idle_during(events)
    assert idle == pytest.approx({"host, between operators": 0.025, "aten::topk": 0.020, "aten::mm": 0.005})
    assert list(idle)[0] == "host, between operators"  # largest first
    assert host_waits(events) == {"cudaStreamSynchronize in aten::topk": 1}
