"""Detectron2 and MMDetection run one COCO protocol: every setting read from both resolved configs agrees,
except the differences listed (and justified) in benchmarks.coco_protocol.JUSTIFIED."""

from __future__ import annotations

import pytest

from benchmarks import coco_protocol
from benchmarks.spec import per_process_batch
from pretrain.errors import UserError


@pytest.mark.parametrize("schedule", ["1x", "2x"])
def test_detectron2_and_mmdetection_share_the_coco_protocol(schedule):
    rows = coco_protocol.comparison(schedule)
    assert len(rows) >= 18  # every setting that matters is read from both configs
    drifted = [(key, d2, mm) for key, d2, mm, note in rows if note == "DIFFERENT"]
    assert not drifted, drifted
    values = {key: (d2, mm) for key, d2, mm, _ in rows}
    assert values["global batch"] == ("16", "16") and values["lr"] == ("0.02", "0.02")
    assert values["train input"][0] == "short side 640–800 step 32 (one per image), long side ≤ 1333"
    assert "SyncBN / SyncBN / SyncBN / SyncBN" == values["norm: backbone / FPN / box head / mask head"][1]


def test_a_changed_setting_shows_up_as_drift(monkeypatch):
    from benchmarks import openmmlab

    original = openmmlab.load_config

    def drifted(framework, model, schedule):
        cfg = original(framework, model, schedule)
        cfg.optim_wrapper.optimizer.lr = 0.01
        cfg.model.backbone.frozen_stages = 1
        return cfg

    monkeypatch.setattr(openmmlab, "load_config", drifted)
    notes = {key: note for key, _, _, note in coco_protocol.comparison("1x")}
    assert notes["lr"] == "DIFFERENT" and notes["frozen backbone stages"] == "DIFFERENT"


def test_the_global_batch_is_split_over_processes_or_refused():
    assert [per_process_batch(16, n, "coco") for n in (1, 2, 4, 8, 16)] == [16, 8, 4, 2, 1]
    with pytest.raises(UserError, match="global batch of 16 images cannot be split over 3 processes; use 1, 2, 4"):
        per_process_batch(16, 3, "coco")
