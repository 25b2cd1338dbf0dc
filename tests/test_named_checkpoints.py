"""Released checkpoints by name: resolved from torch's hub cache without a network, read in their released
formats (MoCo, SwAV, MMSelfSup), and one error line naming the URL and the cache path when neither works."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import timm
import torch

from benchmarks.cli import main as benchmarks_main
from pretrain.errors import UserError
from tests.conftest import run_main
from transfer.named import RELEASED, cache_dir, release_url, resolve_checkpoint
from transfer.source import read_backbone


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, and no network: a download attempt is a failed download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        Path(dst).write_bytes(b"partial")  # what an interrupted download leaves
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def _released_file(name: str, obj: dict) -> Path:
    path = cache_dir() / Path(RELEASED[name].url).name
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
