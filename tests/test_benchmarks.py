"""benchmarks/: generated COCO-format data, and the Detectron2 Mask R-CNN smoke benchmark end to end."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks import runner
from benchmarks.cli import main as benchmarks_main
from benchmarks.data.coco import CocoSpec, generate_coco
from benchmarks.registry import REGISTRY
from pretrain.checkpoint import export_backbone
from pretrain.errors import UserError
from tests.conftest import (
    DETECTRON2_SHORTER,
    detectron2_run_dir,
    random_backbone,
    run_cli,
    run_main,
    tensorboard_tags,
    two_process_run_dir,
)


def test_generated_coco_is_read_by_pycocotools_and_scores_ground_truth_at_ap_1(tmp_path):
    root = generate_coco(CocoSpec(train_images=4, val_images=6, seed=3), tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "train2017", "val2017"]
    gt = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert len(gt.getImgIds()) == 6 and {c["name"] for c in gt.loadCats(gt.getCatIds())} == {
        "triangle", "square", "hexagon"}
    for image in gt.loadImgs(gt.getImgIds()):
        assert (root / "val2017" / image["file_name"]).is_file()
    for iou_type in ("bbox", "segm"):
        predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                        "bbox": a["bbox"], "segmentation": a["segmentation"]} for a in gt.dataset["annotations"]]
        evaluation = COCOeval(gt, gt.loadRes(predictions), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    # deterministic from the seed
    again = generate_coco(CocoSpec(train_images=4, val_images=6, seed=3), tmp_path / "again")
    assert (again / "annotations" / "instances_val2017.json").read_text() == (
        root / "annotations" / "instances_val2017.json").read_text()


@pytest.fixture
def tiny_backbone(tmp_path):
    return random_backbone(tmp_path / "ckpt")


@pytest.mark.slow
def test_detectron2_smoke_benchmark_end_to_end_then_skips(detectron2_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(detectron2_runs["home"])  # where its embedded COCO data was generated
    result, tiny_backbone, out = detectron2_runs["result"], detectron2_runs["ckpt"], detectron2_runs["out"]
    shorter = ("--opts", *DETECTRON2_SHORTER)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = detectron2_run_dir(detectron2_runs, "coco")
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["framework"] == "detectron2" and record["method"] == "sl"
    for task in ("bbox", "segm"):  # numbers straight from COCOEvaluator (pycocotools)
        assert math.isfinite(record["metrics"][task]["AP"]) and 0 <= record["metrics"][task]["AP"] <= 100
    resolved = (run_dir / "config.yaml").read_text()
    assert "FORMAT: RGB" in resolved and "DEPTH: 18" in resolved and "STRIDE_IN_1X1: false" in resolved
    assert "- 123.675" in resolved  # pixel mean on the 0..255 scale, from the checkpoint's metadata
    assert (run_dir / "weights" / f"{tiny_backbone.name.split('.')[0]}.detectron2.pkl").is_file()
    assert "model_final.pth" in detectron2_runs["work_files"][run_dir / "work"]
    # TensorBoard: loss, lr, iteration time and the evaluation's metrics (Detectron2's own writer)
    assert {"total_loss", "lr", "time", "bbox/AP", "segm/AP"} <= tensorboard_tags(run_dir / "work")

    before = (run_dir / "result.json").read_bytes()
    # the rerun and the refusal stop before any training: in this process
    again = run_main(benchmarks_main, ["run", "coco", "--ckpt", str(tiny_backbone), "--schedule", "smoke",
                                       "--out", str(out), *shorter])
    assert again.returncode == 0 and "already finished" in again.stdout
    assert (run_dir / "result.json").read_bytes() == before

    # A failing run (here: a checkpoint that cannot be converted) leaves the finished run as it was.
    broken = tmp_path / "broken.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, broken)
    failed = run_main(benchmarks_main, ["run", "coco", "--ckpt", str(broken), "--schedule", "smoke", "--out", str(out)])
    assert failed.returncode == 2 and "error: " in failed.stderr and "Traceback" not in failed.stderr
    assert (run_dir / "result.json").read_bytes() == before


def test_a_crashing_run_is_recorded_as_failed(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def crash(*args):
        raise FloatingPointError("Loss became infinite or NaN at iteration=3!")

    monkeypatch.setitem(REGISTRY, ("coco", "detectron2"), dataclasses.replace(
        REGISTRY[("coco", "detectron2")], run=crash))
    with pytest.raises(UserError, match="failed: FloatingPointError: Loss became infinite or NaN"):
        runner.run_benchmark("coco", tiny_backbone, "detectron2", "smoke", out=tmp_path / "bench")
    run_dir = tmp_path / "bench" / "coco" / "detectron2" / "smoke" / tiny_backbone.name.split(".")[0] / "seed0"
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["status"] == "failed" and "NaN" in failure["error"]
    assert not (run_dir / "result.json").exists()


def test_bad_benchmark_input_gets_one_message(tiny_backbone, tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["coco", "--ckpt", str(tiny_backbone), "--schedule", "1x"], "--data is required for the 1x schedule"),
        (["coco", "--ckpt", str(tiny_backbone), "--data", str(tmp_path / "nope")],
         "coco data not found under"),
        (["coco", "--ckpt", str(tmp_path / "missing.pth")], "checkpoint not found"),
        (["coco", "--ckpt", str(tiny_backbone), "--framework", "caffe"], "no benchmark 'coco' for framework 'caffe'"),
        (["coco", "--ckpt", str(tiny_backbone), "--schedule", "3x"], "unknown schedule '3x' for coco"),
        (["voc", "--framework", "mmseg", "--ckpt", str(tiny_backbone), "--data", str(tmp_path)],
         "voc data not found under"),
        (["probe", "--framework", "frozen", "--schedule", "standard", "--ckpt", str(tiny_backbone), "--data",
          str(tmp_path / "nope")], "probe data not found under"),
        (["probe", "--framework", "frozen", "--schedule", "standard", "--ckpt", str(garbage)],
         "not a PyTorch weights file"),
        (["coco", "--framework", "mmdet", "--ckpt", str(garbage)], "not a PyTorch weights file"),
    ]
    from benchmarks.cli import main

    for args, message in cases:  # in this process: the CLI's own entry point, as `python -m benchmarks` calls it
        assert main(["run", *args, "--out", str(tmp_path / "bench")]) == 2, args
        assert message in capsys.readouterr().err, (args, message)
    # and once as a real command: one line on stderr, exit status 2, no traceback
    result = run_cli("-m", "benchmarks", "run", *cases[0][0], "--out", str(tmp_path / "bench"))
    assert result.returncode == 2 and cases[0][1] in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bench").exists()


# --- MMDetection / MMSegmentation -------------------------------------------------------------------


def test_generated_voc_and_ade20k_are_read_by_mmsegs_own_datasets(tmp_path):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    from PIL import Image

    from benchmarks.data.segmentation import SegSpec, generate_ade20k, generate_voc
    from benchmarks.frameworks.openmmlab import load_config, set_dataset

    register_all_modules()
    spec = SegSpec(train_images=3, val_images=2, extra_aug_images=2, seed=1)
    voc = generate_voc(spec, tmp_path)
    assert voc.parts[-2:] == ("VOCdevkit", "VOC2012")
    lists = {n: (voc / "ImageSets" / "Segmentation" / f"{n}.txt").read_text().split() for n in
             ("train", "val", "trainval", "aug")}
    assert len(lists["train"]) == 3 and len(lists["val"]) == 2 and lists["trainval"] == lists["train"] + lists["val"]
    assert len(lists["aug"]) == 5 and not set(lists["aug"]) & set(lists["val"])
    first = Image.open(voc / "SegmentationClass" / f"{lists['val'][0]}.png")
    assert first.mode == "P" and first.getpalette()[3:6] == [128, 0, 0]  # VOC's colour of class 1
    assert Image.open(voc / "SegmentationClassAug" / f"{lists['aug'][-1]}.png").mode == "L"

    cfg = load_config("mmseg", "fcn_d8_voc", "smoke")
    set_dataset(cfg, voc)
    train, val = DATASETS.build(cfg.train_dataloader.dataset), DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 3 + 5 and len(val) == 2  # VOC train + the aug list, as mmseg's protocol concatenates
    labels = val[0]["data_samples"].gt_sem_seg.data.unique().tolist()
    assert 255 in labels and 0 in labels and set(labels) <= {0, 1, 2, 3, 255}  # borders are ignored

    ade = generate_ade20k(spec, tmp_path)
    assert sorted(p.name for p in (ade / "images" / "training").iterdir())[0] == "ADE_train_00000001.jpg"
    raw = np.asarray(Image.open(ade / "annotations" / "validation" / "ADE_val_00000001.png"))
    assert raw.dtype == np.uint8 and 0 in raw and 1 in raw and raw.max() <= 4
    cfg = load_config("mmseg", "upernet_ade20k", "smoke")
    set_dataset(cfg, ade)
    sample = DATASETS.build(cfg.val_dataloader.dataset)[0]["data_samples"].gt_sem_seg.data
    assert set(sample.unique().tolist()) <= {0, 1, 2, 3, 255} and 255 in sample  # 0 -> ignore, 1..4 -> 0..3
    assert torch.equal(sample[0] == 255, torch.from_numpy(raw == 0))


def _run_dir(runs, task, framework):
    return runs["out"] / task / framework / "smoke" / runs["ckpt"].name.split(".")[0] / "seed0"


@pytest.mark.slow
def test_mmdet_mask_rcnn_smoke_end_to_end(two_process_runs):
    result = two_process_runs["results"][("coco", "mmdet")]
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = two_process_run_dir(two_process_runs, "coco", "mmdet")
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["framework_version"].startswith("3.")
    for task in ("bbox", "segm"):  # from mmdet's CocoMetric (pycocotools), in percent
        assert math.isfinite(record["metrics"][task]["AP"]) and 0 <= record["metrics"][task]["AP"] <= 100
    cfg = Config.fromstring((run_dir / "config.yaml").read_text(), ".py")
    weights = run_dir / "weights" / f"{two_process_runs['ckpt'].name.split('.')[0]}.mmdet.pth"
    backbone = cfg.model.backbone
    assert backbone.init_cfg == {"type": "Pretrained", "checkpoint": str(weights)} and backbone.depth == 18
    # mmdet's selfsup_pretrain protocol: SyncBN trained in the backbone, the stem frozen, standard FPN and heads
    assert backbone.frozen_stages == 0 and backbone.norm_eval is False and backbone.norm_cfg.type == "SyncBN"
    assert cfg.model.neck.in_channels == [64, 128, 256, 512] and "norm_cfg" not in cfg.model.neck
    bbox_head = cfg.model.roi_head.bbox_head
    assert bbox_head.type == "Shared2FCBBoxHead" and bbox_head.num_classes == 3
    assert cfg.train_dataloader.dataset.metainfo.classes == ("triangle", "square", "hexagon")
    assert cfg.model.data_preprocessor.mean == [127.5] * 3 and cfg.model.data_preprocessor.std == [63.75] * 3
    assert cfg.model.data_preprocessor.bgr_to_rgb is True  # our weights expect RGB; mmcv reads BGR
    assert "iter_4.pth" in two_process_runs["work_files"][run_dir / "work"]
    # progress as TensorBoard event files too (mmengine's TensorboardVisBackend), as Detectron2 writes them:
    # loss, lr, iteration time and the evaluation's metrics
    assert list((run_dir / "work").glob("*/vis_data/events.out.tfevents.*"))
    assert {"loss", "lr", "time", "coco/bbox_mAP", "coco/segm_mAP"} <= tensorboard_tags(run_dir / "work")


@pytest.mark.slow
def test_mmseg_voc_and_ade20k_smoke_end_to_end_and_resume(openmmlab_runs, two_process_runs):
    ade20k = two_process_runs["results"][("ade20k", "mmseg")]
    assert openmmlab_runs["resumed"].returncode == 0, openmmlab_runs["resumed"].stderr[-3000:]
    assert ade20k.returncode == 0, ade20k.stderr[-3000:]
    for task in ("voc", "ade20k"):
        run_dir = _run_dir(openmmlab_runs, "voc", "mmseg") if task == "voc" else \
            two_process_run_dir(two_process_runs, "ade20k", "mmseg")
        record = json.loads((run_dir / "result.json").read_text())
        assert 0 <= record["metrics"]["sem_seg"]["mIoU"] <= 100 and math.isfinite(record["metrics"]["sem_seg"]["mAcc"])
        cfg = Config.fromstring((run_dir / "config.yaml").read_text(), ".py")
        assert cfg.model.backbone.type == "ResNet" and cfg.model.backbone.deep_stem is False  # not ResNetV1c
        assert cfg.model.backbone.init_cfg.checkpoint.endswith(".mmseg.pth") and "pretrained" not in cfg.model
        in_channels = cfg.model.decode_head.in_channels
        assert in_channels == (512 if task == "voc" else [64, 128, 256, 512])
        assert cfg.model.auxiliary_head.in_channels == 256 and cfg.model.backbone.norm_cfg.type == "SyncBN"
        assert {"loss", "lr", "time", "mIoU"} <= tensorboard_tags(run_dir / "work")
    # The VOC run was killed after its first checkpoint: the rerun resumed there and ran the rest once.
    assert openmmlab_runs["killed_at_5"]
    log = openmmlab_runs["resumed"].stdout + openmmlab_runs["resumed"].stderr
    assert "resumed epoch: 0, iter: 5" in log
    assert "Iter(train) [10/10]" in log and "Iter(train) [ 5/10]" not in log


@pytest.mark.slow
def test_collect_builds_tables_from_run_directories_and_keeps_rows_of_failed_runs(openmmlab_runs, two_process_runs,
                                                                                 tmp_path, monkeypatch):
    import shutil

    from benchmarks.commands.collect import collect, summary

    out = tmp_path / "bench"
    records_only = shutil.ignore_patterns("*.pth", "*.pkl")  # collect reads the run's json records, not its weights
    shutil.copytree(openmmlab_runs["out"], out, ignore=records_only)  # VOC; the 2-process runs: ADE20K, COCO (mmdet)
    for task, framework in (("ade20k", "mmseg"), ("coco", "mmdet")):
        run_dir = two_process_run_dir(two_process_runs, task, framework)
        shutil.copytree(run_dir, out / run_dir.relative_to(two_process_runs["out"]), ignore=records_only)
    voc = _run_dir({**openmmlab_runs, "out": out}, "voc", "mmseg")
    first = json.loads((voc / "result.json").read_text())["metrics"]["sem_seg"]
    second = voc.with_name("seed1")  # a second seed of the same checkpoint, 2 mIoU points higher
    shutil.copytree(voc, second)
    record = json.loads((second / "result.json").read_text())
    record["seed"], record["metrics"]["sem_seg"]["mIoU"] = 1, first["mIoU"] + 2
    (second / "result.json").write_text(json.dumps(record))

    def crash(*args):
        raise FloatingPointError("Loss is NaN at iteration 7")

    for task in ("voc", "ade20k"):
        crashing = dataclasses.replace(REGISTRY[(task, "mmseg")], run=crash)
        monkeypatch.setitem(REGISTRY, (task, "mmseg"), crashing)
    with pytest.raises(UserError):  # a third seed of the finished checkpoint fails
        runner.run_benchmark("voc", openmmlab_runs["ckpt"], "mmseg", "smoke", seed=2, out=out)
    other = export_backbone(__import__("timm").create_model("resnet18", num_classes=0).state_dict(),
                            {"method": "sl", "arch": "resnet18", "dataset": "generated", "epochs": 1}, tmp_path / "c2")
    with pytest.raises(UserError):  # a checkpoint whose only run fails
        runner.run_benchmark("ade20k", other, "mmseg", "smoke", out=out)

    results = tmp_path / "results"
    by_task = collect(out, results).rows
    assert sorted(by_task) == ["ade20k", "coco", "voc"]
    for task in by_task:
        assert (results / f"{task}.md").is_file() and (results / f"{task}.csv").is_file()
        assert (results / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [voc_row] = [row for _, row in by_task["voc"].iterrows() if not row["quoted_source"]]  # ours, not published
    assert voc_row["seeds"] == [0, 1] and voc_row["failed"] and "Loss is NaN" in voc_row["failed"][2]
    mean, std = summary(voc_row, "mIoU")
    assert mean == pytest.approx(first["mIoU"] + 1) and std == pytest.approx(2 ** 0.5)
    ade_rows = {row["method"]: row for _, row in by_task["ade20k"].iterrows()}
    assert ade_rows["look"]["status"] == "finished" and ade_rows["sl"]["status"] == "failed"
    markdown = (results / "voc.md").read_text()
    assert "## Smoke runs" in markdown and "NOT a benchmark result" in markdown and "## Benchmark runs" not in markdown
    assert f"{first['mIoU'] + 1:.1f} ± 1.4" in markdown and "seed 2: FloatingPointError: Loss is NaN" in markdown
    assert "failed" in (results / "ade20k.md").read_text()
    coco_csv = (results / "coco.csv").read_text().splitlines()
    assert coco_csv[0].startswith("checkpoint,method,arch,recipe,data,framework")
    [ours] = [line for line in coco_csv if ",embedded,mmdet," in line]  # the published rows come first
    assert openmmlab_runs["ckpt"].name.split(".")[0] in ours and "generated 2 ep" in ours
    assert "## Published results (not run here)" in markdown and "*mmselfsup-moco-v2-200ep (published)*" in markdown

    # Quoted numbers sit beside ours only as rows marked with their source.
    (results / "quoted.csv").write_text("task,name,method,arch,framework,schedule,source,mIoU\n"
                                        "voc,published-baseline,sl,resnet50,mmseg,1x,Some paper (Table 1),70.0\n")
    collect(out, results)
    assert "*published-baseline (quoted)*" in (results / "voc.md").read_text()
    assert "quoted from Some paper (Table 1)" in (results / "voc.md").read_text()


def test_openmmlab_configs_are_written_as_loaded_without_yapf(monkeypatch):
    """mmengine formats a config's text with yapf each time it logs, dumps or checkpoints it (about 1.3 s each,
    8 times in a smoke run); our configs skip that, and the text is still the same config."""
    import mmengine.config.config as mmengine_config
    from mmengine.config import Config

    from benchmarks.frameworks.openmmlab import load_config

    for framework, model in (("mmdet", "mask_rcnn_r50_fpn"), ("mmseg", "fcn_d8_voc"), ("mmseg", "upernet_ade20k")):
        cfg = load_config(framework, model, "smoke")
        monkeypatch.setattr(mmengine_config, "FormatCode", lambda *a, **k: pytest.fail("yapf formatted the config"))
        text = cfg.pretty_text
        monkeypatch.undo()
        assert Config.fromstring(text, ".py").to_dict() == cfg.to_dict(), model
    # read once per process: each caller gets its own copy, with the same setting
    first = load_config("mmdet", "mask_rcnn_r50_fpn", "smoke")
    first.model.backbone.depth, first.train_cfg.max_iters = 18, 3
    again = load_config("mmdet", "mask_rcnn_r50_fpn", "smoke")
    assert again.model.backbone.depth == 50 and again.train_cfg.max_iters == 10
    assert again._format_python_code is False
