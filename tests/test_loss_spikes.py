"""Loss spikes: detected against the running level, logged with their step, counted in the run record,
kept across a resume, and shown next to the backbone in the benchmark tables."""

from __future__ import annotations

import json
import random

import pytest
import torch

import pretrain.trainer as trainer_module
from pretrain.config import load_config
from pretrain.monitor import LossSpikeDetector
from tests.conftest import REPO


def test_detector_flags_a_jump_but_not_noise_or_a_falling_loss():
    rng = random.Random(0)
    detector = LossSpikeDetector()
    # a noisy, falling loss (per-batch noise of +-40 %) is not a spike, whatever its level
    for step in range(1, 301):
        assert detector.update(step, (2.0 * 0.99**step + 0.05) * rng.uniform(0.6, 1.4)) is None
    assert 1.0 < detector.max_ratio < 3.0  # the noise came closest to, but stayed under, the factor
    spike = detector.update(301, 25.0)
    assert spike is not None and spike["step"] == 301 and spike["loss"] == 25.0
    assert detector.max_ratio > 3.0
    assert detector.summary()["loss_spikes"] == 1 and detector.summary()["max_loss_step"] == 301
    # near 0 the floor keeps late-training noise (0.02 -> 0.2) from counting as a spike
    calm = LossSpikeDetector()
    for step in range(60):
        calm.update(step, 0.02)
    assert calm.update(60, 0.2) is None and calm.update(61, 0.5) is not None
    # too little history: nothing is judged yet
    early = LossSpikeDetector()
    assert all(early.update(s, 1.0 if s % 2 else 50.0) is None for s in range(10))
    # off
    off = LossSpikeDetector(factor=0)
    for step in range(40):
        off.update(step, 1.0)
    assert off.update(40, 1e6) is None


def test_detector_state_round_trips():
    a = LossSpikeDetector()
    for step in range(80):
        a.update(step, 1.0 + (step == 70) * 10)
    b = LossSpikeDetector()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # plain values: weights-only checkpoints hold them
    assert b.summary() == a.summary() and list(b.history) == list(a.history)
    assert a.update(80, 9.0) == b.update(80, 9.0)


def test_trainer_logs_and_records_a_spike_and_keeps_it_across_resume(tiny_overrides, tmp_path, monkeypatch, capsys):
    real_step = trainer_module.training_step
    calls = {"n": 0}

    def step_with_a_spike(*args, **kwargs):
        loss, metrics = real_step(*args, **kwargs)
        calls["n"] += 1
        # the loss the trainer sees at one step is 40x the real one (as if the batch had blown up)
        return (loss * 40 if calls["n"] == 30 else loss), metrics

    monkeypatch.setattr(trainer_module, "training_step", step_with_a_spike)
    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml", [*tiny_overrides, "schedule.epochs=8"])
    exported = trainer_module.train(config)

    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    events = [r for r in rows if r.get("event") == "loss_spike"]
    assert [e["step"] for e in events] == [30]
    assert events[0]["loss"] > 3 * events[0]["running_median"]
    start = next(r for r in rows if r.get("event") == "start")
    assert start["peak_lr"] == config.optim.lr_per_256 * 32 / 256 and start["global_batch"] == 32
    meta = torch.load(exported, weights_only=True)["meta"]
    assert meta["training"]["loss_spikes"] == 1 and meta["training"]["spike_steps"] == [30]
    assert meta["schedule"]["peak_lr"] == start["peak_lr"] and meta["schedule"]["total_steps"] == 32

    # the count travels with the checkpoint: a finished run started again reports the same
    again = trainer_module.train(config)
    assert torch.load(again, weights_only=True)["meta"]["training"]["loss_spikes"] == 1

    from transfer.export import pretraining_recipe

    assert "1 loss spike (!)" in pretraining_recipe(meta)

    # `python -m pretrain inspect` reads the same log: per-epoch summary, the spike, the largest ratio
    from pretrain.cli import main

    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "loss spikes at steps 30" in printed and "logit_max max" in printed
    ratio = float(printed.split("largest loss / running median: ")[1].split()[0])
    assert ratio == pytest.approx(meta["training"]["max_ratio"], abs=0.01) and ratio > 3
