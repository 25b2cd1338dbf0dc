"""Released checkpoints by name: resolved from torch's hub cache without a network, read in their released
formats (MoCo, SwAV, MMSelfSup), and one error line naming the URL and the cache path when neither works."""

from __future__ import annotations

import pickle
import urllib.request
from pathlib import Path
from urllib.error import URLError

import pytest
import timm
import torch

from benchmarks.cli import main as benchmarks_main
from pretrain.errors import UserError
from tests.conftest import run_main
from transfer.named import RELEASED, cached_path, release_url, resolve_checkpoint
from transfer.source import read_backbone


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """Empty caches (torch's hub, Detectron2's iopath) and no network: the frameworks' own download code runs
    and its first request fails, as on a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "iopath"))

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # torch.hub's downloader
    monkeypatch.setattr(urllib.request, "urlopen", offline)  # iopath's (urlretrieve)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def _released_file(name: str, obj: dict) -> Path:
    path = cached_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def test_a_name_resolves_to_its_file_in_the_hub_cache_without_the_network(hub):
    state = _resnet18_state()
    moco = {"epoch": 800, "arch": "resnet50", "optimizer": {},
            "state_dict": {**{f"module.encoder_q.{k}": v for k, v in state.items()},
                           **{f"module.encoder_k.{k}": v for k, v in state.items()},
                           "module.queue": torch.zeros(4, 8), "module.queue_ptr": torch.zeros(1)}}
    path = _released_file("moco-v2-800ep", moco)
    assert path.parent == hub and path.name == "moco_v2_800ep_pretrain.pth.tar"
    assert resolve_checkpoint("moco-v2-800ep") == path
    source = read_backbone(resolve_checkpoint("moco-v2-800ep"))
    assert source.flavour == "MoCo" and source.arch == "resnet18" and "module.encoder_k" in source.dropped
    assert all(torch.equal(source.state_dict[k], v) for k, v in state.items() if not k.startswith("fc."))
    # a path is a path, whatever it is called
    assert resolve_checkpoint(str(path)) == path


def test_swav_and_mmselfsup_files_are_read_in_their_released_formats(hub):
    state = _resnet18_state()
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # SwAV's file: the whole model under `module.`, with its projection head and prototypes
    swav = {**{f"module.{k}": v for k, v in backbone.items()},
            "module.projection_head.0.weight": torch.zeros(8, 512), "module.prototypes.weight": torch.zeros(3, 8)}
    source = read_backbone(resolve_checkpoint(str(_released_file("swav-800ep", swav))))
    assert source.arch == "resnet18" and {"projection_head", "prototypes"} <= set(source.dropped)
    # MMSelfSup's: an algorithm checkpoint, the backbone under `backbone.` beside neck, heads and the key encoder
    mmselfsup = {"meta": {"mmselfsup_version": "0.7.0"}, "state_dict": {
        **{f"backbone.{k}": v for k, v in backbone.items()}, **{f"encoder_k.0.{k}": v for k, v in backbone.items()},
        "neck.mlp.0.weight": torch.zeros(8, 512), "queue": torch.zeros(8, 4)}}
    source = read_backbone(resolve_checkpoint(str(_released_file("mmselfsup-moco-v2-200ep", mmselfsup))))
    assert source.flavour == "OpenMMLab algorithm (MMSelfSup)" and source.arch == "resnet18"
    assert {"encoder_k", "neck", "queue"} <= set(source.dropped)
    assert all(torch.equal(source.state_dict[k], v) for k, v in backbone.items())


def test_without_network_or_cache_a_name_is_one_error_and_nothing_is_written(hub, tmp_path):
    url = RELEASED["moco-v2-800ep"].url
    with pytest.raises(UserError) as refused:
        resolve_checkpoint("moco-v2-800ep")
    cached = hub / "moco_v2_800ep_pretrain.pth.tar"
    assert str(refused.value) == (f"moco-v2-800ep: cannot download {url} ([Errno -3] Temporary failure in name "
                                  f"resolution); put the file at {cached} and rerun")
    assert not list(hub.glob("*"))  # the partial download is gone
    out = tmp_path / "bench"
    result = run_main(benchmarks_main, ["run", "coco", "--ckpt", "moco-v2-800ep", "--framework", "detectron2",
                                        "--schedule", "smoke", "--device", "cpu", "--out", str(out)])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: moco-v2-800ep: cannot download")
    assert url in lines[0] and str(cached) in lines[0]
    assert not out.exists()


def test_torchvision_names_and_non_names():
    assert release_url("torchvision://resnet50") == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    with pytest.raises(UserError, match="torchvision has no IMAGENET1K_V1 weights for 'resnet5'"):
        release_url("torchvision://resnet5")
    assert release_url("runs/pretrain/sl_cpu/export/sl.pth") is None
    assert resolve_checkpoint("no/such/file.pth") == Path("no/such/file.pth")  # the caller reports it missing


MSRA = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"


def test_msra_caffe2_weights_resolve_from_detectron2s_cache_and_convert_exactly_in_caffe_style(hub, tmp_path):
    """Detectron2's MSRA R-50 (the supervised backbone of MoCo's baselines): caffe2 blobs with frozen BN,
    stride in the 1x1 convolutions, BGR 0-255 input; each framework reproduces it exactly."""
    from transfer.caffe2 import caffe2_blobs
    from transfer.export import export

    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False)
    with torch.no_grad():  # statistics other than (0, 1), so that folding them into the affine matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    cached = tmp_path / "iopath" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    assert cached_path(MSRA) == cached
    cached.parent.mkdir(parents=True)
    cached.write_bytes(pickle.dumps(caffe2_blobs(model.state_dict()), protocol=2))
    source = read_backbone(resolve_checkpoint(MSRA))
    assert source.arch == "resnet50" and source.stride_in_1x1 and source.dropped == ["fc1000"]
    assert source.input == {"channel_order": "BGR", "pixel_range": [0, 255], "mean": [103.53, 116.28, 123.675],
                            "std": [1.0, 1.0, 1.0]}
    record = export(source, ["detectron2", "mmdet", "mmseg"], tmp_path / "out", verify=True)
    targets = record["targets"]
    assert all(t["verified"] and max(t["max_relative_error"].values()) <= 1e-5 for t in targets.values())
    assert targets["detectron2"]["settings"]["MODEL.RESNETS.STRIDE_IN_1X1"] is True
    assert targets["detectron2"]["settings"]["INPUT.FORMAT"] == "BGR"
    assert targets["mmdet"]["settings"]["model.backbone"]["style"] == "caffe"
    assert targets["mmdet"]["settings"]["model.data_preprocessor"]["bgr_to_rgb"] is False
    # and the converted backbone computes what the caffe2 model (frozen BN, 1x1 strides) computes
    from transfer.source import reference_model

    model.eval()
    for stage in (model.layer2, model.layer3, model.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = stage[0].conv2.stride, (1, 1)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reference_model(source).forward_features(images), model.forward_features(images),
                                   rtol=1e-5, atol=1e-5)


def test_without_network_or_cache_a_detectron2_name_is_one_error(hub, tmp_path):
    with pytest.raises(UserError) as refused:
        resolve_checkpoint(MSRA)
    cached = tmp_path / "iopath" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    assert str(refused.value).startswith(f"{MSRA}: cannot download https://dl.fbaipublicfiles.com/detectron2/"
                                         "ImageNetPretrained/MSRA/R-50.pkl (")
    assert str(refused.value).endswith(f"put the file at {cached} and rerun") and not cached.exists()


def test_a_pickle_that_names_anything_but_arrays_is_refused(tmp_path):
    import os

    bad = tmp_path / "R-50.pkl"
    bad.write_bytes(pickle.dumps({"conv1_w": os.getcwd}))  # a callable: unpickling it could run code
    with pytest.raises(UserError, match="refused: the pickle names posix.getcwd"):
        read_backbone(bad)


def test_timm_names_resolve_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as refused:  # nothing cached, no network
        resolve_checkpoint("timm://resnet18.a1_in1k")
    assert str(refused.value).startswith("timm://resnet18.a1_in1k: cannot download "
                                         "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors")
    assert f"Hugging Face hub cache at {tmp_path / 'hf' / 'models--timm--resnet18.a1_in1k'}" in str(refused.value)
    # the layout huggingface_hub leaves: refs/main naming a snapshot that holds the file
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    state = {k: v.contiguous() for k, v in _resnet18_state().items()}
    save_file(state, str(repo / "snapshots" / "0123abcd" / "model.safetensors"))
    path = resolve_checkpoint("timm://resnet18.a1_in1k")
    assert path == repo / "snapshots" / "0123abcd" / "model.safetensors"
    source = read_backbone(path)
    assert source.arch == "resnet18" and source.dropped == ["fc"] and not source.input_recorded
    with pytest.raises(UserError, match="timm has no pretrained weights on the Hugging Face hub for 'resnet5'"):
        release_url("timm://resnet5")
