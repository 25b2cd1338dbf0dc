"""Every real protocol against its published reference, key by key; the verdict on fixed inputs; and the two
COCO protocols side by side, differing only where their references do."""

from __future__ import annotations

import pytest

from benchmarks.commands import coco_protocol
from benchmarks.reference import UNEXPLAINED, Published, Reference, report, unused_reasons, verdict
from benchmarks.spec import per_process_batch
from benchmarks.tasks import all_benchmarks, get_benchmark
from pretrain.errors import UserError


def _rows(task: str, framework: str, schedule: str):
    benchmark = get_benchmark(task, framework)
    return benchmark.compare_reference(schedule, benchmark.references[schedule])


def test_every_real_protocol_has_a_reference_or_says_why_and_no_difference_is_unexplained():
    for benchmark in all_benchmarks():
        for schedule in benchmark.real_schedules:
            declared = benchmark.references.get(schedule)
            assert declared, f"{benchmark.key} {schedule}: no reference and no reason"
            if isinstance(declared, Reference):
                rows = benchmark.compare_reference(schedule, declared)
                assert [r for r in rows if r.reason == UNEXPLAINED] == [], (benchmark.key, schedule)
                assert unused_reasons(rows, declared.differences) == [], (benchmark.key, schedule)
    text, problems = report(all_benchmarks())
    assert problems == 0
    # the certain reference: MoCo's VOC07+12 C4 24k config over the Detectron2 defaults of its time, every setting
    # the same but the defaults added (or given another spelling) since, and its published table
    from benchmarks.moco_reference import SINCE_THEN

    keys = {r.key for r in _rows("voc-det", "detectron2", "24k")}
    assert {k if not k.startswith("MODEL.RETINANET.") else "MODEL.RETINANET" for k in keys} == set(SINCE_THEN)
    assert "| ImageNet-1M, MoCo v2, 800ep | 82.5 ± 0.2 | 57.4 ± 0.2 | 64.0 ± 0.4 | 5 | moco-v2-800ep |" in text
    assert "ImageNet-1M, supervised (MSRA R-50" in text and "81.3 ± 0.2 | 53.5 ± 0.2 | 58.8 ± 0.4" in text


def test_what_every_protocol_builds_is_what_its_reference_built_or_says_why():
    from benchmarks.reference import compare_built

    for benchmark in all_benchmarks():
        for schedule in benchmark.real_schedules:
            reference = benchmark.references.get(schedule)
            if not isinstance(reference, Reference):
                continue
            rows = compare_built(benchmark.built_semantics(schedule), reference.built, reference.built_differences)
            assert [r for r in rows if r.reason == UNEXPLAINED] == [], (benchmark.key, schedule)
            assert {r.key for r in rows} == set(reference.built_differences), (benchmark.key, schedule)
    # the layer MoCo's numbers ran: Detectron2's NaiveSyncBatchNorm, in backbone and FPN, in both schedules
    built = get_benchmark("coco", "detectron2").built_semantics("1x")
    assert built["norm layers: backbone"] == built["norm layers: FPN"] == "NaiveSyncBatchNorm"
    assert built["precise BN: estimator"].startswith("equal-weight mean")


def test_a_layer_built_otherwise_than_the_reference_is_an_unexplained_difference(monkeypatch):
    """The finding that made this check: "SyncBN" builds torch's layer today, NaiveSyncBatchNorm in MoCo's time."""
    from benchmarks.frameworks import detectron2_train

    original = detectron2_train.protocol_config

    def as_before(*args, **kwargs):
        cfg = original(*args, **kwargs)
        cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "SyncBN"  # the config string the reference's files state
        return cfg

    monkeypatch.setattr(detectron2_train, "protocol_config", as_before)
    benchmark = get_benchmark("coco", "detectron2")
    assert not {"MODEL.FPN.NORM", "MODEL.RESNETS.NORM"} & {r.key for r in _rows("coco", "detectron2", "1x")}
    # the strings agree ...
    text, problems = report([benchmark])
    # ... and the built layers do not: backbone and FPN in 1x and 2x; the two norm reasons are stale in both
    assert problems == 2 * 2 + 2 * 2
    assert "| norm layers: backbone | SyncBatchNorm | NaiveSyncBatchNorm | UNEXPLAINED |" in text


def test_every_reference_is_pinned_and_the_installed_copies_are_the_pinned_files():
    import hashlib
    import importlib
    import re
    from pathlib import Path

    pins = [pin for b in all_benchmarks() for r in b.references.values() if isinstance(r, Reference)
            for pin in r.pinned]
    assert all(r.pinned for b in all_benchmarks() for r in b.references.values() if isinstance(r, Reference))
    assert len(pins) > 15
    for pin in pins:
        assert re.fullmatch(r"[0-9a-f]{7,40}|v\d+\.\d+\.\d+", pin.revision), pin
        assert pin.blob == "" or re.fullmatch(r"[0-9a-f]{40}", pin.blob), pin
    installed = [pin for pin in pins if pin.installed]
    assert {pin.installed.split(":")[0] for pin in installed} == {"detectron2", "mmdet", "mmseg"}
    for pin in installed:
        package, inside = pin.installed.split(":")
        data = (Path(importlib.import_module(package).__file__).parent / inside).read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's id of the file's content
        assert blob == pin.blob, f"{pin.installed} is not {pin}"
    assert any(str(pin).startswith("facebookresearch/moco@132aea9 detection/configs/Base-RCNN-C4-BN.yaml (blob ")
               for pin in pins)


def test_with_msras_caffe_style_weights_the_voc_protocol_is_mocos_supervised_config():
    """pascal_voc_R_50_C4_24k.yaml (without its _moco input convention) is what MSRA's R-50 ran under: BGR,
    caffe pixel statistics, stride in the 1x1 convolutions; our protocol gets them from the weights."""
    from benchmarks.frameworks import detectron2_train
    from benchmarks.reference import differences, flatten
    from benchmarks.tasks.voc_det_detectron2 import protocol
    from transfer.caffe2 import CAFFE_INPUT
    from transfer.detectron2 import Detectron2Target
    from transfer.source import SourceBackbone

    benchmark = get_benchmark("voc-det", "detectron2")
    moco = benchmark.references["24k"]
    supervised = Reference(moco.reproduces, None, {k: v for k, v in moco.overrides.items() if k not in (
        "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.RESNETS.STRIDE_IN_1X1", "INPUT.FORMAT")})
    msra = SourceBackbone({}, "resnet50", "caffe2", dict(CAFFE_INPUT), True, stride_in_1x1=True)
    ours = detectron2_train.protocol_config(protocol(), "24k", Detectron2Target().settings(msra))
    rows = differences(flatten(ours), flatten(detectron2_train.reference_config(supervised)), {},
                       lambda key: key in detectron2_train.RUN_KEYS)
    assert rows == []


def test_the_protocols_follow_their_references_in_what_the_issues_were_about():
    voc = get_benchmark("voc-det", "detectron2").references["24k"]
    assert voc.overrides["MODEL.RESNETS.NORM"] == "naiveSyncBN" and voc.overrides["TEST.PRECISE_BN.ENABLED"]
    # COCO in Detectron2 is MoCo's: synchronised BN in backbone and FPN only (naiveSyncBN, the layer its "SyncBN"
    # built then), standard heads, precise BN
    from benchmarks.moco_reference import SINCE_THEN

    assert [r.key for r in _rows("coco", "detectron2", "1x") if r.reason not in SINCE_THEN.values()] == [
        "MODEL.FPN.NORM", "MODEL.RESNETS.NORM", "TEST.EVAL_PERIOD"]
    # COCO in MMDetection is its own selfsup_pretrain config; only the evaluation period differs (and the
    # converter's explicit plain stem)
    assert [r.key for r in _rows("coco", "mmdet", "1x")] == ["model.backbone.deep_stem", "train_cfg.val_interval"]


def test_a_changed_setting_is_an_unexplained_difference(monkeypatch):
    from benchmarks.frameworks import detectron2_train, openmmlab

    original_d2, original_mm = detectron2_train.protocol_config, openmmlab.load_config

    def drifted_d2(*args, **kwargs):
        cfg = original_d2(*args, **kwargs)
        cfg.MODEL.RESNETS.NORM = "SyncBN"  # what the VOC protocol used before it followed MoCo
        cfg.SOLVER.BASE_LR = 0.01
        return cfg

    def drifted_mm(framework, model, schedule):
        cfg = original_mm(framework, model, schedule)
        cfg.optim_wrapper.optimizer.lr = 0.01
        cfg.model.test_cfg.rcnn.max_per_img = 50
        cfg.global_batch_size = 32
        return cfg

    monkeypatch.setattr(detectron2_train, "protocol_config", drifted_d2)
    monkeypatch.setattr(openmmlab, "load_config", drifted_mm)
    unexplained = {r.key: (r.ours, r.reference) for r in _rows("voc-det", "detectron2", "24k")
                   if r.reason == UNEXPLAINED}
    assert unexplained == {"MODEL.RESNETS.NORM": ("SyncBN", "naiveSyncBN"), "SOLVER.BASE_LR": (0.01, 0.02)}
    unexplained = {r.key: (r.ours, r.reference) for r in _rows("coco", "mmdet", "1x") if r.reason == UNEXPLAINED}
    assert unexplained == {"optim_wrapper.optimizer.lr": (0.01, 0.02), "global batch": (32, 16),
                           "model.test_cfg.rcnn.max_per_img": (50, 100)}
    _, problems = report([get_benchmark("voc-det", "detectron2"), get_benchmark("coco", "mmdet")])
    # VOC: two keys, and the layer "SyncBN" builds (torch's) in the backbone and the res5 head; the mmdet changes show
    # in its 1x and its 2x (which inherits them)
    assert problems == 2 + 2 + 3 * 2


def test_a_reason_for_a_difference_that_is_gone_is_stale():
    benchmark = get_benchmark("voc-det", "detectron2")
    reference = benchmark.references["24k"]
    stale = Reference(reference.reproduces, reference.base, reference.overrides,
                      differences={"SOLVER.BASE_LR": "we use another lr"})
    rows = benchmark.compare_reference("24k", stale)
    assert rows == [] and unused_reasons(rows, stale.differences) == ["SOLVER.BASE_LR"]


VOC = Published("MoCo v2", {"AP50": 82.5, "AP": 57.4}, "MoCo README", 5, {"AP50": 0.2, "AP": 0.2})
COCO = Reference("mmdet's selfsup config", None, {}, tolerance=0.3, tolerance_source="COCO's run-to-run variation")
NO_SPREAD = Reference("MMSelfSup's config", None, {})


def test_the_verdict_on_both_sides_of_the_published_spread_and_of_the_tolerance():
    within = verdict("AP50", [82.3, 82.5, 82.6, 82.4, 82.45], VOC, NO_SPREAD)
    assert within.reproduces and within.trials == 5 and within.measured_std is not None
    assert within.text().startswith("reproduces (-0.05, within 0.2: published std of 5 trials")
    beyond = verdict("AP", [57.1, 57.2, 57.0, 57.2, 57.1], VOC, NO_SPREAD)
    assert beyond.reproduces is False and beyond.text().startswith("differs by -0.28 (more than 0.2")
    published = Published("MoCo v2 800ep", {"AP_bb": 38.0}, "mmdet README")
    assert verdict("AP_bb", [38.25], published, COCO).reproduces is True
    off = verdict("AP_bb", [37.6], published, COCO)
    assert off.reproduces is False and "more than 0.3: COCO's run-to-run variation" in off.text()
    unjudged = verdict("AP_bb", [37.6], published, NO_SPREAD)
    assert unjudged.reproduces is None and "no published spread or tolerance" in unjudged.text()
    with pytest.raises(ValueError, match="no measured trials"):
        verdict("AP_bb", [], published, COCO)


@pytest.mark.parametrize("schedule", ["1x", "2x"])
def test_the_two_coco_protocols_differ_only_where_their_references_do(schedule):
    rows = coco_protocol.comparison(schedule)
    assert len(rows) >= 18  # every setting that matters is read from both configs
    drifted = [(key, d2, mm) for key, d2, mm, note in rows if note == "DIFFERENT"]
    assert not drifted, drifted
    values = {key: (d2, mm) for key, d2, mm, _ in rows}
    assert values["global batch"] == ("16", "16") and values["lr"] == ("0.02", "0.02")
    assert values["box head"] == ("0 conv + 2 fc", "0 conv + 2 fc")
    assert values["norm: backbone / FPN / box head / mask head"] == ("naiveSyncBN / naiveSyncBN / none / none",
                                                                    "SyncBN / none / none / none")
    assert values["frozen backbone stages"] == ("none", "stem")


def test_a_changed_setting_shows_up_as_drift(monkeypatch):
    from benchmarks.frameworks import openmmlab

    original = openmmlab.load_config

    def drifted(framework, model, schedule):
        cfg = original(framework, model, schedule)
        cfg.optim_wrapper.optimizer.lr = 0.01
        cfg.model.roi_head.bbox_head.type = "Shared4Conv1FCBBoxHead"
        return cfg

    monkeypatch.setattr(openmmlab, "load_config", drifted)
    notes = {key: note for key, _, _, note in coco_protocol.comparison("1x")}
    assert notes["lr"] == "DIFFERENT" and notes["box head"] == "DIFFERENT"


def test_protocols_command_prints_every_reference_and_exits_0():
    from benchmarks.cli import main
    from tests.conftest import run_main

    result = run_main(main, ["protocols"])
    assert result.returncode == 0, result.stderr[-2000:]
    for benchmark in all_benchmarks():
        for schedule in benchmark.real_schedules:
            assert f"### {benchmark.name} / {benchmark.framework} / {schedule}" in result.stdout
    assert "## COCO in Detectron2 and MMDetection, side by side" in result.stdout


def test_the_global_batch_is_split_over_processes_or_refused():
    assert [per_process_batch(16, n, "coco") for n in (1, 2, 4, 8, 16)] == [16, 8, 4, 2, 1]
    with pytest.raises(UserError, match="global batch of 16 images cannot be split over 3 processes; use 1, 2, 4"):
        per_process_batch(16, 3, "coco")
