"""PASCAL VOC07+12 detection in Detectron2: the generated VOCdevkit, the res5 head's weights, the smoke run."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from tests.conftest import detectron2_run_dir


def test_generated_vocdevkit_is_read_by_detectron2_and_scores_ground_truth_at_ap_100(tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, Instances

    from benchmarks.data.voc_detection import VOC_CLASSES, VocDetSpec, generate_voc_detection
    from benchmarks.frameworks.detectron2_voc import VocBothMetricsEvaluator, register_voc

    root = generate_voc_detection(VocDetSpec(trainval_2007=4, test_2007=10, trainval_2012=3), tmp_path)
    datasets = register_voc(root)
    assert [len(DatasetCatalog.get(name)) for name in datasets.train] == [4, 3]
    test = DatasetCatalog.get(datasets.test)
    assert len(test) == 10 and datasets.num_classes == 20
    # every class has an object in VOC2007 test (so that each class's AP is defined); some are difficult
    xml = "".join(p.read_text() for p in (root / "VOC2007" / "Annotations").glob("*.xml"))
    assert "<difficult>1</difficult>" in xml and "<pose>Unspecified</pose>" in xml
    assert {a["category_id"] for d in test for a in d["annotations"]} == set(range(len(VOC_CLASSES)))

    evaluator = VocBothMetricsEvaluator(datasets.test)
    evaluator.reset()
    for image in test:  # the ground truth as detections: AP 100 with VOC's own matching, both AP definitions
        instances = Instances((image["height"], image["width"]))
        instances.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in image["annotations"]]))
        instances.scores = torch.ones(len(image["annotations"]))
        instances.pred_classes = torch.tensor([a["category_id"] for a in image["annotations"]])
        evaluator.process([image], [{"instances": instances}])
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "bbox_integral"}
    for scores in results.values():
        assert scores["AP50"] == pytest.approx(100) and scores["AP"] == pytest.approx(100)


def _not_from_source(model: torch.nn.Module, source) -> list[str]:
    """Backbone and res5-head tensors of `model` that differ from the source backbone's (or are missing)."""
    from transfer.detectron2 import target_key

    expected = {}
    for key, value in source.state_dict.items():
        name = target_key(key)
        if name is not None:  # res5 is the RoI head in C4; stem..res4 the backbone
            expected[("roi_heads." if name.startswith("res5.") else "backbone.") + name] = value
    state = model.state_dict()
    pretrained_part = [k for k in state if k.startswith(("backbone.", "roi_heads.res5."))
                       and not k.startswith("roi_heads.res5.norm.") and not k.endswith("num_batches_tracked")]
    wrong = [k for k in pretrained_part if k not in expected or not torch.equal(state[k], expected[k].float())]
    return wrong + sorted(set(expected) - set(state))


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
def test_the_converted_checkpoint_fills_the_backbone_and_the_res5_roi_head(arch, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from benchmarks.commands.dryrun import random_backbone
    from benchmarks.frameworks.detectron2_train import protocol_config
    from benchmarks.frameworks.detectron2_voc import PROTOCOL
    from transfer.export import export
    from transfer.source import read_backbone

    source = read_backbone(random_backbone(tmp_path, arch))
    target = export(source, ["detectron2"], tmp_path / "weights", verify=False)["targets"]["detectron2"]
    weights = tmp_path / "weights" / target["file"]

    def loaded(path: Path) -> torch.nn.Module:
        cfg = protocol_config(PROTOCOL, "smoke", target["settings"])
        model = build_model(cfg)
        DetectionCheckpointer(model).load(str(path))
        return model

    model = loaded(weights)
    assert type(model.roi_heads).__name__ == "Res5ROIHeadsExtraNorm" and hasattr(model.roi_heads.res5, "norm")
    res5 = [k for k in model.state_dict()
            if k.startswith("roi_heads.res5.") and not k.startswith("roi_heads.res5.norm.")]
    assert len(res5) > 10
    assert _not_from_source(model, source) == []

    # the same check fails when res5 stays at its random init (a checkpoint without res5)
    payload = pickle.loads(weights.read_bytes())
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith("res5.")}
    without_res5 = tmp_path / "without_res5.pkl"
    without_res5.write_bytes(pickle.dumps(payload))
    left_random = _not_from_source(loaded(without_res5), source)
    assert left_random and all(k.startswith("roi_heads.res5.") for k in left_random)
    assert any(k.endswith("conv1.weight") for k in left_random)


@pytest.mark.slow
def test_voc_detection_smoke_runs_detectron2s_faster_rcnn_c4_with_its_voc_evaluator(detectron2_runs):
    result = detectron2_runs["result"]  # COCO's run came first, in the same process
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = detectron2_run_dir(detectron2_runs, "voc-det")
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "finished" and record["seeds_asked"] == 1
    for group in ("bbox", "bbox_integral"):  # detectron2's PascalVOCDetectionEvaluator, 11-point and integral
        assert math.isfinite(record["metrics"][group]["AP50"]) and 0 <= record["metrics"][group]["AP50"] <= 100
    resolved = (run_dir / "config.yaml").read_text()
    assert "NAME: Res5ROIHeadsExtraNorm" in resolved and "NUM_CLASSES: 20" in resolved
    assert "DEPTH: 18" in resolved and "NORM: naiveSyncBN" in resolved and "FREEZE_AT: 0" in resolved
    log = (run_dir / "work" / "log.txt").read_text()
    assert "Evaluating" in log
    # the run after COCO's in one process logs its own lines only (and COCO's log has none of VOC's)
    coco_log = (detectron2_run_dir(detectron2_runs, "coco") / "work" / "log.txt").read_text()
    assert log.count("Starting training from iteration 0") == 1 == coco_log.count("Starting training from iteration 0")
    assert "COCOEvaluator" not in log and "bench_voc_2007_test" not in coco_log
    # the smoke schedule's 2 batches of precise BN, by benchmarks.frameworks.precise_bn (not fvcore's per-rank one)
    assert "precise BN: " in log and "from 2 iterations on each of 1 rank(s), combined over the ranks" in log
    assert list((run_dir / "work").glob("events.out.tfevents.*"))  # Detectron2's TensorBoard writer


def test_voc_detection_asks_for_five_seeds_unless_told_otherwise():
    from benchmarks.cli import _seeds, build_parser
    from pretrain.errors import UserError

    def seeds(task: str, *args: str) -> list[int]:
        return _seeds(build_parser().parse_args(["run", task, *args, "--ckpt", "x"]), task)

    assert seeds("voc-det") == [0, 1, 2, 3, 4]
    assert seeds("voc-det", "--seeds", "2") == [0, 1] and seeds("voc-det", "--seed", "7") == [7]
    assert seeds("coco") == [0]
    with pytest.raises(UserError, match="not both"):
        seeds("voc-det", "--seed", "1", "--seeds", "2")


def test_one_seed_gives_two_checkpoints_the_same_data_order_and_new_layers(tmp_path):
    """What pairs two runs in the tables (benchmarks/comparisons.py): with the same seed, the trainer of another
    checkpoint sees the same first batch (images, flips, boxes) and starts the same new layers; another seed
    changes both."""
    from benchmarks.commands.dryrun import random_backbone
    from benchmarks.data.voc_detection import embedded_voc_detection
    from benchmarks.frameworks.detectron2_train import build_config, seeded_trainer
    from benchmarks.frameworks.detectron2_voc import PROTOCOL
    from benchmarks.spec import RunSpec
    from pretrain.checkpoint import export_backbone
    from transfer.export import export
    from transfer.source import read_backbone

    first = read_backbone(random_backbone(tmp_path / "a", "resnet18"))
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in first.state_dict.items()}
    second = read_backbone(export_backbone(other, {**first.meta, "method": "other"}, tmp_path / "b" / "ckpt"))
    data = embedded_voc_detection()

    def started(source, seed: int, name: str) -> tuple[list, dict[str, torch.Tensor], torch.Tensor]:
        target = export(source, ["detectron2"], tmp_path / name, verify=False)["targets"]["detectron2"]
        spec = RunSpec("smoke", tmp_path / name / target["file"], target["settings"], data, tmp_path / name / "work",
                       seed, "cpu", 1)
        trainer = seeded_trainer(build_config(spec, PROTOCOL), PROTOCOL.evaluator)
        trainer.resume_or_load(resume=False)  # loads the checkpoint, after everything the seed drew
        batch = next(iter(trainer.data_loader))
        new = {k: v.clone() for k, v in trainer.model.state_dict().items()
               if k.startswith(("proposal_generator.", "roi_heads.box_predictor."))}
        return ([(b["file_name"], b["image"].sum().item(), b["instances"].gt_boxes.tensor.tolist()) for b in batch],
                new, trainer.model.backbone.res2[0].conv1.weight.detach().clone())

    batch_a, new_a, stem_a = started(first, 3, "a3")
    batch_b, new_b, stem_b = started(second, 3, "b3")
    assert batch_a == batch_b and new_a.keys() == new_b.keys() and len(new_a) > 4
    assert all(torch.equal(new_a[k], new_b[k]) for k in new_a)
    assert not torch.equal(stem_a, stem_b)  # ... while the backbones are each checkpoint's own
    batch_c, new_c, _ = started(first, 4, "a4")
    assert batch_c != batch_a and not all(torch.equal(new_a[k], new_c[k]) for k in new_a)
