"""What the GPU path relies on, shown on the CPU: SyncBN conversion, amp choice, bf16 / channels_last
training with exact resume, `train.device=cuda` without a GPU, and all ranks stopping together."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import BatchNormAct2d

from pretrain.config import load_config
from pretrain.errors import UserError
from pretrain.models import build_backbone, conv_input_sizes, strided_convs_on_one_pixel
from pretrain.trainer import choose_precision, convert_sync_batchnorm, train
from tests.background import background_command, background_result
from tests.conftest import (
    REPO,
    TINY_DATA,
    TORCHRUN_2,
    first_difference,
    require_deterministic,
    run_cli,
    run_main,
    set_args,
)

CONFIGS = {"sl": "sl_cpu.yaml", "sl-mlp": "slmlp_cpu.yaml", "look": "look_cpu.yaml"}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_050"])
def test_sync_bn_conversion_keeps_every_layer_of_a_timm_model(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    with torch.no_grad():  # running statistics other than (0, 1), so that a dropped layer shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    converted = convert_sync_batchnorm(model).eval()
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    with torch.no_grad():
        torch.testing.assert_close(converted(images), model(images))
    if any(isinstance(m, BatchNormAct2d) for m in model.modules()):
        # torch's own converter loses BatchNormAct2d's activation: the outputs change
        plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
        with torch.no_grad():
            assert not torch.allclose(plain(images), model(images), atol=1e-3)


def test_amp_auto_is_bf16_only_where_the_card_has_it(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert choose_precision("auto", cuda) == "fp16"  # bf16 only emulated (e.g. V100, T4): fp16 with a scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose_precision("auto", cuda) == "bf16"
    assert choose_precision("auto", cpu) == "off"
    assert choose_precision("bf16", cpu) == "bf16" and choose_precision("off", cuda) == "off"
    with pytest.raises(UserError, match="train.amp must be auto, bf16, fp16 or off, got 'on'"):
        choose_precision("on", cpu)


# ResNet-18's smallest map at 40 px is layer4's 2x2: no convolution sees a 1x1 map (where a strided one makes
# torch's CPU bfloat16 kernels unsound: check_cpu_bf16_is_sound refuses that case, tested below). 16 training
# images in batches of 8, 2 steps an epoch (a CPU without AVX-512 bfloat16 emulates it: a step's time is in
# proportion to its images).
PRECISION_IMAGE_SIZE = 40
# fp16 on a CPU runs torch's reference convolutions (_slow_conv2d: no oneDNN fp16 kernels on this CPU): 0.9 s a
# step of 16 images at 40 px, 0.4 s at 32 px, where layer4's strided convolutions still see 2x2 maps
FP16_IMAGE_SIZE = 32


def _tiny_config(method: str, generated_dir, out_dir, extra: list[str]):
    overrides = [*TINY_DATA, f"data.generated_dir={generated_dir}", f"out_dir={out_dir}", "model.arch=resnet18",
                 "train.batch_size=8", "data.workers=0", "train.log_every=1", "schedule.epochs=2",
                 "schedule.warmup_epochs=0", "train.keep_every_epochs=1", f"data.image_size={PRECISION_IMAGE_SIZE}",
                 "data.generated.train_per_mode=2", *extra]
    if method == "look":
        overrides.append("method.k=5")
    return load_config(REPO / "pretrain/configs" / CONFIGS[method], overrides)


def _trained_state(config) -> dict:
    train(config)
    return torch.load(config.run_dir() / "checkpoints" / "last.pt", weights_only=True)


def test_precision_tests_train_on_no_map_smaller_than_2x2():
    backbone, _ = build_backbone("resnet18")
    sizes = conv_input_sizes(backbone, PRECISION_IMAGE_SIZE)
    assert len(sizes) == 20 and min(min(h, w) for h, w, _ in sizes.values()) == 2
    # and the helper sees the degenerate case where it is: at 16 px layer4's first convolutions get 1x1 maps
    assert strided_convs_on_one_pixel(backbone, 16) == ["layer4.0.conv1", "layer4.0.downsample.0"]
    assert strided_convs_on_one_pixel(backbone, 24) == []


def test_cpu_bf16_with_a_strided_conv_on_a_1x1_map_is_one_error_and_writes_nothing(generated_dir, tmp_path):
    config = _tiny_config("sl", generated_dir, tmp_path / "run", ["train.amp=bf16", "data.image_size=16"])
    with pytest.raises(UserError) as refused:
        train(config)
    assert str(refused.value) == (
        "train.amp=bf16 on a CPU at data.image_size=16: the strided convolution backbone.layer4.0.conv1 would see a "
        "1x1 map, where torch's CPU bfloat16 kernels compute wrong weight gradients that differ from run to run; "
        "use data.image_size=24 or more, or train.amp=off")
    assert not (tmp_path / "run").exists()


def test_the_determinism_check_reports_runs_that_differ(generated_dir, tmp_path, monkeypatch):
    """Two runs of one config, the second with a convolution that rounds differently (as a platform's
    non-deterministic kernel would): the check fails with its own message, naming the first tensor."""
    one_epoch = ["schedule.epochs=1", "data.image_size=32"]
    first = _trained_state(_tiny_config("sl", generated_dir, tmp_path / "first", one_epoch))
    again = _trained_state(_tiny_config("sl", generated_dir, tmp_path / "again", one_epoch))
    require_deterministic(first["model"], again["model"], "this config")  # no fault: the check passes
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *args, **kwargs: conv2d(*args, **kwargs) * (1 + 2**-20))
    second = _trained_state(_tiny_config("sl", generated_dir, tmp_path / "second", one_epoch))
    with pytest.raises(pytest.fail.Exception) as failed:
        require_deterministic(first["model"], second["model"], "sl at 32 px")
    message = str(failed.value)
    assert message.startswith("this platform is not deterministic for sl at 32 px: two uninterrupted runs of the "
                              "same config differ in backbone.conv1.weight (max |difference| ")
    assert f"torch {torch.__version__}" in message and message.endswith("so an exact resume cannot be checked here")


@pytest.mark.slow
@pytest.mark.multicore  # 1.6x faster on 2 threads
@pytest.mark.parametrize("method,amp", [("sl", "bf16"), ("sl-mlp", "bf16"), ("look", "bf16"), ("sl", "fp16")])
def test_mixed_precision_channels_last_trains_and_resumes_exactly(method, amp, generated_dir, tmp_path):
    size = FP16_IMAGE_SIZE if amp == "fp16" else PRECISION_IMAGE_SIZE
    extra = [f"train.amp={amp}", "train.channels_last=on", f"data.image_size={size}"]
    final = _trained_state(_tiny_config(method, generated_dir, tmp_path / "whole", extra))
    rows = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    start = next(r for r in rows if r.get("event") == "start")
    assert start["amp"] == amp and start["channels_last"] is True
    losses = [r["loss"] for r in rows if "loss" in r and "event" not in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert final["precision"]["amp"] == amp and (amp == "fp16") == (final["grad_scaler"] is not None)

    # A second uninterrupted run must agree to the bit first: otherwise the kernels, not the resume, differ.
    twin = _trained_state(_tiny_config(method, generated_dir, tmp_path / "twin", extra))
    require_deterministic(final["model"], twin["model"], f"{method} with amp {amp} at {size} px")

    # Resume from the end of epoch 1 in another directory: the end state is the same to the bit.
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copyfile(tmp_path / "whole" / "checkpoints" / "epoch_0001.pt", resumed_dir / "last.pt")
    again = _trained_state(_tiny_config(method, generated_dir, tmp_path / "resumed", extra))
    assert again["step"] == final["step"] == 4
    assert first_difference(final["model"], again["model"]) is None  # LOOK's memory (_extra_state) included


def test_device_cuda_without_a_gpu_is_one_error_and_writes_nothing(generated_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI has none: the test runs there
    from pretrain.cli import main as pretrain_main

    out = tmp_path / "run"  # refused before training: the command's own entry point, in this process
    result = run_main(pretrain_main, ["train", "--config", str(REPO / "pretrain/configs/sl_cpu.yaml"),
                                      *set_args(["train.device=cuda", f"out_dir={out}",
                                                 f"data.generated_dir={generated_dir}"])])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.device is 'cuda' but no CUDA device is available"
    assert not out.exists()


@background_command("nan_on_rank_1_runs", processes=2)
def _start_nan_on_rank_1_runs(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                              environ: dict[str, str]) -> Callable[[], dict]:
    """SL and SL-MLP under torchrun in 2 processes, rank 1 given NaN images at step 6."""
    generated_dir, home = request.getfixturevalue("generated_dir"), factory.mktemp("nan_on_rank_1")

    def run(method: str) -> tuple[Path, subprocess.CompletedProcess]:
        out = home / method / "run"
        overrides = [*TINY_DATA, f"data.generated_dir={generated_dir}", f"out_dir={out}", "train.batch_size=32",
                     "data.workers=0", "schedule.epochs=2", "train.log_every=3", "schedule.warmup_epochs=0"]
        config = REPO / "pretrain/configs" / CONFIGS[method]
        return out, run_cli(*TORCHRUN_2, "-m", "pretrain", "train", "--config", str(config), *set_args(overrides),
                            timeout=900, environ=environ, env_extra={"PRETRAIN_INJECT_NAN": "1:6"})

    return lambda: {method: run(method) for method in ("sl", "sl-mlp")}


nan_on_rank_1_runs = background_result("nan_on_rank_1_runs")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sl", "sl-mlp"])
def test_torchrun_two_processes_and_a_nan_on_rank_1_stops_every_rank(method, nan_on_rank_1_runs):
    """Epoch 1 trains and saves; at step 6 rank 1 alone sees NaN images: both ranks stop, last.pt stays."""
    out, result = nan_on_rank_1_runs[method]
    assert result.returncode != 0
    # Both ranks stop at the same step with the same reason: rank 1 (which saw the NaN) prints it and exits
    # with status 2; rank 0 (which saw finite losses) logs it (torchrun may kill it before it prints).
    reason = "loss is nan on rank 1 of 2 at step 6 (epoch 1): training diverged and every rank stopped"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(e.startswith(f"error: {reason}") for e in errors), result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    diverged = [r for r in rows if r.get("event") == "diverged"]
    assert len(diverged) == 1 and diverged[0]["message"].startswith(reason) and diverged[0]["step"] == 7
    assert next(r for r in rows if r.get("event") == "start")["world_size"] == 2
    steps = [r for r in rows if "event" not in r]
    # logged: steps 1-4 (epoch 1), none after the NaN; throughput summed over both ranks
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["img_s"] > 0 for r in steps if "img_s" in r)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 4 and saved["world_size"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not list(out.glob("export/*.pth"))
