"""transfer/: exact conversion into Detectron2 and MMDetection / MMSegmentation, checked by the frameworks."""

from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import torchvision

from pretrain.checkpoint import CHECKPOINT_FORMAT, export_backbone
from tests.conftest import run_main
from transfer import detectron2 as d2
from transfer.cli import main as transfer_main
from transfer.export import export, load_settings
from transfer.source import read_backbone
from transfer.verify import VerificationError

FLAVOURS = ["suite-export", "suite-training", "timm", "torchvision", "moco"]


def randomised_resnet(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm ResNet state dict (with fc) whose BN affine parameters and running stats are all non-default,
    so that a BN tensor mapped to the wrong place changes the features."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
            assert n > 0
    return model.state_dict()


def write_flavour(flavour: str, arch: str, folder, input_convention=None):
    state = randomised_resnet(arch)
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    folder.mkdir(parents=True, exist_ok=True)
    if flavour == "suite-export":
        rgb = {"channel_order": "RGB", "pixel_range": [0, 1], "mean": [0.485, 0.456, 0.406],
               "std": [0.229, 0.224, 0.225]}
        meta = {"method": "look", "arch": arch, "dataset": "generated", "epochs": 1,
                "dropped_heads": ["head", "memory"], "input": input_convention or rgb}
        return export_backbone(backbone, meta, folder)
    path = folder / f"{arch}-{flavour}.pth"
    if flavour == "suite-training":
        model = {f"backbone.{k}": v for k, v in backbone.items()}
        model.update({"head.0.weight": torch.randn(8, 4), "_extra_state": {"embeddings": torch.randn(5, 4)}})
        torch.save({"format": CHECKPOINT_FORMAT, "model": model, "epoch": 2, "step": 10,
                    "config": {"method": {"name": "sl-mlp"}, "model": {"arch": arch},
                               "data": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}}, path)
    elif flavour == "timm":
        torch.save(state, path)
    elif flavour == "torchvision":
        tv = getattr(torchvision.models, arch)(weights=None, num_classes=10)
        tv.load_state_dict(state, strict=True)  # torchvision and timm ResNets share their names
        torch.save({"state_dict": tv.state_dict()}, path)
    elif flavour == "moco":
        q = {f"module.encoder_q.{k}": v for k, v in backbone.items()}
        q.update({"module.encoder_q.fc.0.weight": torch.randn(16, 8),
                  "module.encoder_q.fc.2.weight": torch.randn(4, 16),
                  "module.encoder_k.conv1.weight": torch.randn(2), "module.queue": torch.randn(4, 8),
                  "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
        torch.save({"epoch": 200, "arch": arch, "state_dict": q, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


EXPECTED_DROPPED = {"suite-export": {"head", "memory"}, "suite-training": {"head", "memory"}, "timm": {"fc"},
                    "torchvision": {"fc"}, "moco": {"fc", "module.encoder_k", "module.queue", "module.queue_ptr"}}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_round_trip_every_flavour_to_every_target(arch, flavour, tmp_path):
    path = write_flavour(flavour, arch, tmp_path / "in")
    source = read_backbone(path)
    assert source.arch == arch
    assert set(source.dropped) == EXPECTED_DROPPED[flavour]
    torch.testing.assert_close(source.state_dict["layer1.0.bn1.running_var"],
                               randomised_resnet(arch)["layer1.0.bn1.running_var"])
    record = export(path, ["detectron2", "mmdet", "mmseg"], tmp_path / "out", verify=True)
    for name in ("detectron2", "mmdet", "mmseg"):
        target = record["targets"][name]
        assert target["verified"] and max(target["max_relative_error"].values()) <= 1e-5
        assert (tmp_path / "out" / target["file"]).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []  # no temp files


def test_a_wrong_key_map_fails_verification_and_leaves_no_file(tmp_path, monkeypatch):
    path = write_flavour("timm", "resnet18", tmp_path / "in")
    swapped = [(p, r) for p, r in d2.KEY_MAP]
    # map each block's bn1 onto conv2's norm and bn2 onto conv1's: names valid, tensors wrong
    swapped[3] = (swapped[3][0], lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{3 - int(m[3])}.norm.{m[4]}")
    monkeypatch.setattr(d2, "KEY_MAP", swapped)
    with pytest.raises(VerificationError, match="detectron2: feature maps differ"):
        export(path, ["detectron2"], tmp_path / "out", verify=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_detectron2_file_loads_into_the_benchmark_mask_rcnn(tmp_path):
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    path = write_flavour("suite-export", "resnet50", tmp_path / "in")
    record = export(path, ["detectron2"], tmp_path / "out", verify=False)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    d2.apply_settings(cfg, load_settings(tmp_path / "out" / f"{path.name.split('.')[0]}.transfer.json", "detectron2"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.NORM = "cpu", "", "BN"
    model = build_model(cfg)
    checkpointer = DetectionCheckpointer(model)
    checkpointer._load_model(checkpointer._load_file(str(tmp_path / "out" / record["targets"]["detectron2"]["file"])))
    source = read_backbone(path)
    bottom_up = model.backbone.bottom_up.state_dict()
    torch.testing.assert_close(bottom_up["res4.5.conv3.norm.running_mean"],
                               source.state_dict["layer3.5.bn3.running_mean"])
    torch.testing.assert_close(bottom_up["stem.conv1.weight"], source.state_dict["conv1.weight"])
    converted = {d2.target_key(k): v for k, v in source.state_dict.items() if d2.target_key(k)}
    assert all(torch.equal(bottom_up[k], v) for k, v in converted.items())


def test_openmmlab_files_load_through_pretrained_init_cfg_in_the_benchmark_models(tmp_path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmseg.models.backbones import ResNet as MMSegResNet

    path = write_flavour("moco", "resnet50", tmp_path / "in")
    record = export(path, ["mmdet", "mmseg"], tmp_path / "out", verify=False)
    source = read_backbone(path)

    register_all_modules()
    import mmdet

    config_dir = f"{mmdet.__path__[0]}/.mim/configs"
    cfg = Config.fromfile(f"{config_dir}/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    mmdet_file = tmp_path / "out" / record["targets"]["mmdet"]["file"]
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(mmdet_file))
    detector = MMDET_MODELS.build(cfg.model)
    detector.init_weights()
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict[key]), key

    # mmseg's segmentation backbones are dilated: the same file still fills every tensor
    mmseg_file = tmp_path / "out" / record["targets"]["mmseg"]["file"]
    dilated = MMSegResNet(depth=50, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), style="pytorch",
                          init_cfg=dict(type="Pretrained", checkpoint=str(mmseg_file)))
    dilated.init_weights()
    for key, value in dilated.state_dict().items():
        assert torch.equal(value, source.state_dict[key]), key


def test_recorded_input_convention_drives_the_framework_settings(tmp_path):
    from detectron2.config import get_cfg

    bgr = {"channel_order": "BGR", "pixel_range": [0, 1], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    path = write_flavour("suite-export", "resnet50", tmp_path / "in", input_convention=bgr)
    export(path, ["detectron2", "mmdet"], tmp_path / "out", verify=True)
    sidecar = tmp_path / "out" / f"{path.name.split('.')[0]}.transfer.json"
    cfg = d2.apply_settings(get_cfg(), load_settings(sidecar, "detectron2"))
    assert cfg.INPUT.FORMAT == "BGR"
    assert cfg.MODEL.PIXEL_MEAN == [102.0, 127.5, 153.0] and cfg.MODEL.PIXEL_STD == [51.0, 63.75, 76.5]
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.MODEL.RESNETS.DEPTH == 50
    assert load_settings(sidecar, "mmdet")["model.data_preprocessor"]["bgr_to_rgb"] is False
    record = json.loads(sidecar.read_text())
    assert record["source"]["input_recorded"] is True

    # a checkpoint that records nothing gets torchvision's RGB convention, and says it was assumed
    timm_path = write_flavour("timm", "resnet18", tmp_path / "in2")
    export(timm_path, ["detectron2"], tmp_path / "out2", verify=False)
    sidecar2 = tmp_path / "out2" / f"{timm_path.name.split('.')[0]}.transfer.json"
    cfg2 = d2.apply_settings(get_cfg(), load_settings(sidecar2, "detectron2"))
    assert cfg2.INPUT.FORMAT == "RGB" and cfg2.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
    assert cfg2.MODEL.RESNETS.RES2_OUT_CHANNELS == 64
    assert json.loads(sidecar2.read_text())["source"]["input_recorded"] is False


def test_detectron2_settings_go_through_merge_from_list_and_fail_on_a_wrong_key():
    from detectron2.config import get_cfg

    with pytest.raises(AssertionError, match="Non-existent key: MODEL.RESNETS.DEPT"):
        d2.apply_settings(get_cfg(), {"MODEL.RESNETS.DEPT": 50})
    with pytest.raises(ValueError, match="Type mismatch"):
        d2.apply_settings(get_cfg(), {"MODEL.RESNETS.DEPTH": "fifty"})


def _broken(kind: str, folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.pth"
    state = randomised_resnet("resnet18")
    if kind == "renamed-key":
        state["layer2.0.conv1.weights"] = state.pop("layer2.0.conv1.weight")
        want = ["missing 1 tensor(s): layer2.0.conv1.weight", "unexpected 1 tensor(s): layer2.0.conv1.weights"]
    elif kind == "wrong-shape":
        state["layer3.1.bn2.weight"] = state["layer3.1.bn2.weight"][:100]
        want = ["wrong shape: layer3.1.bn2.weight (100,) (a resnet18 has (256,))"]
    elif kind == "unknown-architecture":
        second_blocks = ("layer1.1.", "layer2.1.", "layer3.1.", "layer4.1.")
        state = {k: v for k, v in state.items() if not k.startswith(second_blocks)}
        want = ["unknown ResNet architecture (basic blocks [1, 1, 1, 1])"]
    elif kind == "not-a-resnet":
        state = {"patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}
        want = ["does not hold a ResNet", "patch_embed.proj.weight"]
    elif kind == "pickled-object":
        state = {"model": argparse.Namespace(depth=50)}
        want = ["not a weights-only checkpoint", "argparse.Namespace"]
    torch.save(state, path)
    return path, want


@pytest.mark.parametrize(
    "kind", ["renamed-key", "wrong-shape", "unknown-architecture", "not-a-resnet", "pickled-object"])
def test_broken_checkpoints_are_refused_with_the_problem_named_and_no_output(kind, tmp_path):
    path, want = _broken(kind, tmp_path / "in")
    out = tmp_path / "out"
    result = run_main(transfer_main, ["export", str(path), "--to", "all", "--out", str(out), "--verify"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in want:
        assert fragment in errors[0], errors[0]
    assert not out.exists() or list(out.iterdir()) == []


def test_unknown_target_is_refused():
    result = run_main(transfer_main, ["export", "whatever.pth", "--to", "caffe2"])
    assert result.returncode == 2 and "unknown target 'caffe2'" in result.stderr


def test_cli_exports_all_and_reports_what_was_dropped(tmp_path):
    path = write_flavour("moco", "resnet18", tmp_path / "in")
    result = run_main(transfer_main, ["export", str(path), "--to", "all", "--out", str(tmp_path / "out"), "--verify"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped: fc, module.encoder_k, module.queue, module.queue_ptr" in result.stdout
    assert "torchvision's assumed" in result.stdout
    assert result.stdout.count("verified, max relative error") == 3
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["resnet18-moco.detectron2.pkl", "resnet18-moco.mmdet.pth", "resnet18-moco.mmseg.pth",
                     "resnet18-moco.transfer.json"]


@pytest.mark.parametrize("target", ["detectron2", "mmdet", "mmseg"])
def test_a_converter_that_forgets_a_tensor_is_caught_by_the_framework_check(target, tmp_path, monkeypatch):
    from transfer.export import TARGETS

    path = write_flavour("timm", "resnet18", tmp_path / "in")
    chosen = TARGETS[target]
    original = type(chosen).payload

    def forgetful(self, source, meta):
        obj = original(self, source, meta)
        weights = obj["model"] if target == "detectron2" else obj["state_dict"]
        weights.pop(next(k for k in weights if ("layer3.0." in k or "res4.0." in k) and "running_var" in k))
        return obj

    monkeypatch.setattr(type(chosen), "payload", forgetful)
    with pytest.raises(VerificationError, match=rf"{target}: target tensors left uninitialised: \S*(layer3|res4)\.0"):
        export(path, [target], tmp_path / "out", verify=True)
    assert list((tmp_path / "out").iterdir()) == []
