"""Small images: the 3x3 stride-1 stem (`model.stem=small`) and the training set held on the device
(`data.in_memory`), against the file path it replaces."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from benchmarks.cli import main as benchmarks_main
from pretrain.config import load_config
from pretrain.data import IndexedImageFolder, build_train_dataset
from pretrain.data.memory import InMemoryImages, crop_boxes, resized_crops, step_seed
from pretrain.data.sampler import GlobalBatchSampler
from pretrain.errors import UserError
from pretrain.models import build_backbone, conv_input_sizes
from pretrain.trainer import train
from tests.conftest import REPO, TINY_DATA, first_difference, run_main
from transfer.cli import main as transfer_main
from transfer.source import read_backbone, reference_model

CPU = torch.device("cpu")


def test_the_small_stem_keeps_a_32px_image_at_32_to_4_px_through_the_stages():
    model, dim = build_backbone("resnet18", "small")
    assert dim == 512 and isinstance(model.maxpool, torch.nn.Identity)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    sizes = conv_input_sizes(model, 32)
    assert sizes["layer1.0.conv1"][:2] == (32, 32) and sizes["layer4.1.conv2"][:2] == (4, 4)
    imagenet = conv_input_sizes(build_backbone("resnet18")[0], 32)
    assert imagenet["layer1.0.conv1"][:2] == (8, 8) and imagenet["layer4.1.conv2"][:2] == (1, 1)
    with pytest.raises(UserError, match="unknown model.stem 'tiny'; known: imagenet, small"):
        build_backbone("resnet18", "tiny")
    with pytest.raises(UserError, match="defined for the ResNets"):
        build_backbone("vit_tiny_patch16_224", "small")


def _small_config(generated_dir, out_dir, extra: list[str] = ()):
    overrides = [*TINY_DATA, f"data.generated_dir={generated_dir}", f"out_dir={out_dir}", "model.arch=resnet18",
                 "model.stem=small", "data.in_memory=true", "train.batch_size=16", "data.workers=0",
                 "schedule.epochs=2", "schedule.warmup_epochs=0", "train.keep_every_epochs=1",
                 "data.generated.train_per_mode=4", *extra]
    return load_config(REPO / "pretrain/configs/sl_cpu.yaml", overrides)


def test_a_small_stem_backbone_trains_in_memory_resumes_exactly_and_is_refused_by_the_frameworks(
        generated_dir, tmp_path):
    exported = train(_small_config(generated_dir, tmp_path / "whole"))
    final = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    assert final["step"] == 4 and final["config"]["data"]["in_memory"] is True

    # in memory, a run resumed from the end of epoch 1 ends where the uninterrupted one did, to the bit
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copyfile(tmp_path / "whole" / "checkpoints" / "epoch_0001.pt", resumed / "last.pt")
    train(_small_config(generated_dir, tmp_path / "resumed"))
    again = torch.load(resumed / "last.pt", weights_only=True)
    assert again["step"] == 4 and first_difference(final["model"], again["model"]) is None

    # the export records the stem; the transfer stage reads it back as the model it is
    source = read_backbone(exported)
    assert source.stem == "small" and source.meta["stem"] == "small"
    assert tuple(source.state_dict["conv1.weight"].shape) == (64, 3, 3, 3)
    model = reference_model(source)
    assert isinstance(model.maxpool, torch.nn.Identity) and model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)

    # Detectron2's and OpenMMLab's ResNets have the ImageNet stem: one line each, nothing written
    out = tmp_path / "converted"
    refused = run_main(transfer_main, ["export", str(exported), "--to", "all", "--out", str(out)])
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "a small-stem backbone (3x3 stride-1 conv1, no max-pool) cannot go to detectron2, mmdet, mmseg" \
        in refused.stderr and not out.exists()
    bench = tmp_path / "bench"
    refused = run_main(benchmarks_main, ["run", "coco", "--ckpt", str(exported), "--framework", "mmdet",
                                         "--schedule", "smoke", "--device", "cpu", "--out", str(bench)])
    assert refused.returncode == 2 and "cannot go to mmdet" in refused.stderr and "Traceback" not in refused.stderr
    assert not list(bench.rglob("*.json"))


def _images(n: int = 24, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_crops_follow_random_resized_crop_and_resample_as_torchvisions_tensor_path():
    generator = torch.Generator().manual_seed(0)
    boxes = crop_boxes(20000, 28, 40, (0.08, 1.0), generator, CPU).float()
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 40).all()
    area = h * w / (28 * 40)
    assert area.min() >= 0.06 and area.max() <= 1.0  # the scale range, up to RandomResizedCrop's rounding
    # torchvision's own draws for the same image, one at a time: the same distribution
    torch.manual_seed(0)
    from torchvision.transforms import RandomResizedCrop

    theirs = torch.tensor([RandomResizedCrop.get_params(torch.zeros(3, 28, 40), [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(20000)]).float()
    assert abs(theirs[:, 2].mean() - h.mean()) < 0.3 and abs(theirs[:, 3].mean() - w.mean()) < 0.3
    assert abs(theirs[:, 0].mean() - top.mean()) < 0.3
    assert abs((theirs[:, 2] * theirs[:, 3] / (28 * 40)).mean() - area.mean()) < 0.01

    images = _images()
    boxes = crop_boxes(len(images), 28, 28, (0.08, 1.0), generator, CPU)
    ours = resized_crops(images, boxes, 32)
    for image, box, mine in zip(images, boxes.tolist(), ours, strict=True):
        reference = F.resized_crop(image.float(), *box, [32, 32], antialias=False)
        assert torch.allclose(mine, reference, atol=1e-4)  # the same taps and weights: float rounding
        # PIL (the file path) rounds to 8 bits: where the crop is enlarged, at most one grey level apart
        pil = np.asarray(F.resized_crop(Image.fromarray(image.permute(1, 2, 0).numpy()), *box, [32, 32]))
        assert np.abs(pil.astype(np.float32) - mine.permute(1, 2, 0).numpy()).max() <= 1.0


def _write_folder(root, images: torch.Tensor, classes: int = 3):
    for i, image in enumerate(images):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


def test_in_memory_batches_are_the_file_paths_samples_and_views_for_the_same_draws(tmp_path):
    _write_folder(tmp_path / "train", _images(24))
    config = load_config(REPO / "pretrain/configs/sl_cpu.yaml", [f"data.root={tmp_path / 'train'}",
                                                                 "data.image_size=32", "data.workers=0"])
    files = build_train_dataset(config.data)
    memory = InMemoryImages(files, CPU, 32, config.data.crop_scale, config.data.mean, config.data.std)
    sampler = GlobalBatchSampler(len(files), 8, seed=3)
    sampler.set_epoch(1)
    batches = list(memory.batches(sampler, seed=3, rank=0, epoch=1))
    order = list(sampler)
    assert len(batches) == 3
    for step, (images, labels, indices) in enumerate(batches):
        assert indices.tolist() == order[step * 8:(step + 1) * 8]  # the file path's samples, in its order
        assert labels.tolist() == [files[i][1] for i in indices.tolist()]
        # the same crop and flip through PIL and torchvision (the file path's transform, draws fixed):
        generator = torch.Generator().manual_seed(step_seed(3, 0, 1, step))
        boxes, flips = memory.draw(8, generator)
        for image, index, box, flip in zip(images, indices.tolist(), boxes.tolist(), flips.tolist(), strict=True):
            view = F.resized_crop(files.load(index), *box, [32, 32])
            view = F.normalize(F.to_tensor(F.hflip(view) if flip else view), config.data.mean, config.data.std)
            std = torch.tensor(config.data.std).view(3, 1, 1)
            assert ((view - image).abs() * std).max() <= 1 / 255 + 1e-6  # within one grey level
    # a run resumed at step 2 of the epoch draws what the whole epoch drew there
    sampler.set_epoch(1, start_step=2)
    (tail,) = memory.batches(sampler, seed=3, rank=0, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(tail, batches[2], strict=True))


def test_in_memory_needs_images_of_one_size(tmp_path):
    _write_folder(tmp_path / "train", _images(4))
    Image.new("RGB", (30, 28)).save(tmp_path / "train" / "class0" / "odd.png")
    with pytest.raises(UserError, match=r"data.in_memory needs images of one size; .* \[\(28, 28\), \(28, 30\)\]"):
        InMemoryImages(IndexedImageFolder(tmp_path / "train"), CPU, 32, [0.5, 1.0], [0.5] * 3, [0.5] * 3)
