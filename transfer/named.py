"""Released checkpoints by name: what the published references were measured with, fetched and cached by
the frameworks' own download code, so that `--ckpt moco-v2-800ep` means the file the paper used.

- the names in RELEASED and `torchvision://<arch>` (torchvision's IMAGENET1K_V1 weights) live in torch's
  hub cache (`$TORCH_HOME/hub/checkpoints/`, where `torch.hub.load_state_dict_from_url` keeps them) and are
  fetched by `torch.hub.download_url_to_file`;
- `detectron2://<path>` (Detectron2's model zoo, e.g. `ImageNetPretrained/MSRA/R-50.pkl`) lives in
  Detectron2's iopath cache (`$FVCORE_CACHE`, else `~/.torch/iopath_cache`) and is fetched by its
  PathManager;
- `timm://<model>[.<tag>]` (timm's pretrained weights, e.g. `timm://resnet50.a1_in1k`) lives in the Hugging
  Face hub cache and is fetched by `huggingface_hub.hf_hub_download`, as timm's own `pretrained=True` does.
A file already in its cache is used as it is, without the network. On a machine without network or cache
a name is one error naming the URL and the cache path, before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pretrain.errors import UserError


@dataclass(frozen=True)
class Released:
    url: str
    what: str  # the pretraining, and where the file is published
    layout: str  # how the file holds the backbone: "moco", "swav", "mmselfsup" or "torchvision"


RELEASED = {
    "moco-v1-200ep": Released("https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v1_200ep/"
                              "moco_v1_200ep_pretrain.pth.tar",
                              "MoCo v1, ImageNet-1M, 200 epochs (facebookresearch/moco README)", "moco"),
    "moco-v2-200ep": Released("https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_200ep/"
                              "moco_v2_200ep_pretrain.pth.tar",
                              "MoCo v2, ImageNet-1M, 200 epochs (facebookresearch/moco README)", "moco"),
    "moco-v2-800ep": Released("https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
                              "moco_v2_800ep_pretrain.pth.tar",
                              "MoCo v2, ImageNet-1M, 800 epochs (facebookresearch/moco README)", "moco"),
    "swav-800ep": Released("https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
                           "SwAV, ImageNet-1M, 800 epochs (facebookresearch/swav hubconf.py)", "swav"),
    "mmselfsup-moco-v2-200ep": Released("https://download.openmmlab.com/mmselfsup/moco/"
                                        "mocov2_resnet50_8xb32-coslr-200e_in1k_20220225-89e03af4.pth",
                                        "MoCo v2 reproduced by MMSelfSup, ImageNet-1M, 200 epochs (its model zoo)",
                                        "mmselfsup"),
}
TORCHVISION = "torchvision://"  # torchvision://resnet50: torchvision's ImageNet weights (IMAGENET1K_V1)
DETECTRON2 = "detectron2://"  # Detectron2's model zoo, e.g. detectron2://ImageNetPretrained/MSRA/R-50.pkl
DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"  # what its PathManager fetches a name from
TIMM = "timm://"  # timm://resnet50.a1_in1k: timm's weights on the Hugging Face hub (model.safetensors)


def _timm_hub_id(name: str) -> str:
    from timm.models import get_pretrained_cfg

    model = name[len(TIMM):]
    cfg = get_pretrained_cfg(model)
    if cfg is None or not cfg.hf_hub_id:
        raise UserError(f"{name}: timm has no pretrained weights on the Hugging Face hub for '{model}'")
    return cfg.hf_hub_id


def release_url(name: str) -> str | None:
    """The download URL of a checkpoint name, or None when `name` is no name (a path)."""
    if name in RELEASED:
        return RELEASED[name].url
    if name.startswith(DETECTRON2):
        return DETECTRON2_URL + name[len(DETECTRON2):]
    if name.startswith(TIMM):
        return f"https://huggingface.co/{_timm_hub_id(name)}/resolve/main/model.safetensors"
    if name.startswith(TORCHVISION):
        arch = name[len(TORCHVISION):]
        try:
            from torchvision.models import get_model_weights

            return get_model_weights(arch)["IMAGENET1K_V1"].url
        except (ValueError, KeyError):
            raise UserError(f"{name}: torchvision has no IMAGENET1K_V1 weights for '{arch}'") from None
    return None


def cached_path(name: str) -> Path:
    """Where `name`'s file lives in its framework's cache (whether it is there or not)."""
    url = release_url(name)
    if url is None:
        raise UserError(f"{name} is not a released checkpoint's name")
    if name.startswith(DETECTRON2):
        from iopath.common.file_io import get_cache_dir

        return Path(get_cache_dir()) / urlparse(url).path.lstrip("/")  # iopath's own layout
    if name.startswith(TIMM):  # the hub cache's snapshot of `main` once there, else the model's folder
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_id = _timm_hub_id(name)
        found = try_to_load_from_cache(hub_id, "model.safetensors")
        return Path(found) if isinstance(found, str) else Path(HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def resolve_checkpoint(ckpt: str | Path) -> Path:
    """A path as it is; a released checkpoint's name as its file in its cache (downloaded there once)."""
    url = release_url(str(ckpt)) if not Path(ckpt).exists() else None
    if url is None:
        return Path(ckpt)
    cached = cached_path(str(ckpt))
    if cached.is_file():
        return cached
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")  # ranks may fetch at once
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        if str(ckpt).startswith(DETECTRON2):
            from detectron2.utils.file_io import PathManager

            return Path(PathManager.get_local_path(str(ckpt)))
        if str(ckpt).startswith(TIMM):
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

            try:
                return Path(hf_hub_download(_timm_hub_id(str(ckpt)), "model.safetensors"))
            except (HfHubHTTPError, LocalEntryNotFoundError) as e:
                raise OSError(str(e).splitlines()[0]) from None
        import torch

        torch.hub.download_url_to_file(url, str(partial), progress=False)
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        partial.unlink(missing_ok=True)
        reason = str(getattr(e, "reason", "") or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"put the file at {cached}" if not str(ckpt).startswith(TIMM) else \
            f"put it into the Hugging Face hub cache at {cached} (refs/main, snapshots/<revision>/model.safetensors)"
        raise UserError(f"{ckpt}: cannot download {url} ({reason}); {where} and rerun") from None
    partial.replace(cached)
    return cached


def write_stand_in(name: str, path: Path, seed: int = 0) -> Path:
    """A randomly initialised ResNet in the file layout of the released checkpoint `name`: what the smoke run
    of `python -m benchmarks reference` resolves offline, to run the whole pipeline without the file. A
    ResNet-18 (a caffe2 file: a ResNet-50, the only caffe-style kind). Never a result: its numbers mean nothing."""
    import pickle

    import timm
    import torch

    torch.manual_seed(seed)
    caffe2 = name.startswith(DETECTRON2)
    state = timm.create_model("resnet50" if caffe2 else "resnet18", pretrained=False).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if caffe2:
        from transfer.caffe2 import caffe2_blobs

        with open(path, "wb") as f:
            pickle.dump(caffe2_blobs(state), f)
        return path
    layout = RELEASED[name].layout if name in RELEASED else "torchvision"
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if layout == "moco":
        obj = {"epoch": 0, "arch": "resnet18", "state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}}
    elif layout == "swav":
        obj = {f"module.{k}": v for k, v in backbone.items()}
    elif layout == "mmselfsup":
        obj = {"meta": {"stand_in": True}, "state_dict": {f"backbone.{k}": v for k, v in backbone.items()}}
    else:
        obj = state
    torch.save(obj, path)
    return path
