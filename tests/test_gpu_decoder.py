"""The GPU data path (`data.decoder: gpu`) run on the CPU: the file path's samples, labels and crop distributions,
pixels within one grey level of PIL's for the same draws, bit-exact resume, and one error for a bad file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from pretrain.config import IMAGENET_MEAN, IMAGENET_STD, load_config
from pretrain.data import IndexedImageFolder
from pretrain.data.gpu_decode import FileBytes, GpuDecodedImages, gpu_decoder_missing
from pretrain.data.imagenet_like import ImageNetLikeConfig, generate_imagenet_like
from pretrain.data.memory import crop_boxes, step_seed
from pretrain.data.sampler import GlobalBatchSampler
from pretrain.errors import CorruptImageError, UserError
from pretrain.trainer import train
from tests.conftest import REPO, first_difference

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """Generated ImageNet-like JPEGs of many sizes, plus what ImageNet also holds: a PNG named .JPEG, a CMYK and a
    greyscale JPEG."""
    base = tmp_path_factory.mktemp("jpegs")
    root = base / "train"
    shutil.copytree(generate_imagenet_like(ImageNetLikeConfig(images=21, classes=3, seed=2), base / "generated"),
                    root)
    with Image.open(next(root.glob("class_00/*.JPEG"))) as image:
        image.convert("RGB").save(root / "class_00" / "png_inside.JPEG", "PNG")
        image.convert("CMYK").save(root / "class_01" / "cmyk.JPEG", "JPEG")
        image.convert("L").save(root / "class_02" / "grey.JPEG", "JPEG")
    return root


def _decoder(root, image_size: int = 64, workers: int = 0) -> GpuDecodedImages:
    return GpuDecodedImages(IndexedImageFolder(root), CPU, image_size, [0.08, 1.0], IMAGENET_MEAN, IMAGENET_STD,
                            workers)


def test_boxes_for_images_of_many_sizes_are_each_sizes_own_draws():
    heights, widths = torch.tensor([28, 300, 500, 17, 375]), torch.tensor([40, 500, 333, 90, 500])
    boxes = crop_boxes(5, heights, widths, (0.08, 1.0), torch.Generator().manual_seed(4), CPU)
    for i in range(5):  # the random numbers drawn do not depend on the sizes: row i is the one-size draw's row i
        alone = crop_boxes(5, int(heights[i]), int(widths[i]), (0.08, 1.0), torch.Generator().manual_seed(4), CPU)
        assert torch.equal(boxes[i], alone[i])
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()
    # 17 x 90 is wider than 4:3 at every scale near 1: the centre-crop fallback, as RandomResizedCrop's
    narrow = crop_boxes(50, 17, 90, (0.95, 1.0), torch.Generator().manual_seed(0), CPU)
    assert narrow.tolist() == [[0, 33, 17, 23]] * 50  # h 17, w round(17 x 4/3), left (90 - 23) // 2


def test_gpu_path_serves_the_file_paths_samples_and_views_and_resumes_to_the_bit(jpeg_folder):
    decoder = _decoder(jpeg_folder, workers=1)
    files = decoder.dataset
    sampler = GlobalBatchSampler(len(files), 8, seed=3)
    sampler.set_epoch(1)
    batches = list(decoder.batches(sampler, seed=3, rank=0, epoch=1))
    order = list(sampler)
    assert len(batches) == 3 and len(files) == 24
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for step, (images, labels, indices) in enumerate(batches):
        assert images.shape == (8, 3, 64, 64) and images.dtype == torch.float32
        assert indices.tolist() == order[step * 8:(step + 1) * 8]  # the file path's samples, in its order
        assert labels.tolist() == [files.samples[i][1] for i in indices.tolist()]
        # the same crop and flip through PIL (the file path's decoder and transform, draws fixed):
        pils = [files.load(i) for i in indices.tolist()]
        generator = torch.Generator().manual_seed(step_seed(3, 0, 1, step))
        boxes, flips = decoder.draw([p.height for p in pils], [p.width for p in pils], generator)
        for image, pil, box, flip in zip(images, pils, boxes.tolist(), flips.tolist(), strict=True):
            view = F.resized_crop(pil, *box, [64, 64])
            view = F.normalize(F.to_tensor(F.hflip(view) if flip else view), IMAGENET_MEAN, IMAGENET_STD)
            assert ((view - image).abs() * std).max() <= 1 / 255 + 1e-5  # PIL rounds to 8 bits; we do not
    # decoded on the CPU, every file (JPEG, PNG inside, CMYK, greyscale) has PIL's pixels exactly
    data = [FileBytes.read(path) for path, _ in files.samples]
    for decoded, index in zip(decoder.decode(data, list(range(len(files)))), range(len(files)), strict=True):
        assert np.array_equal(decoded.permute(1, 2, 0).numpy(), np.asarray(files.load(index)))
    # a run resumed at step 2 of the epoch gets what the whole epoch got there, to the bit
    sampler.set_epoch(1, start_step=2)
    (tail,) = decoder.batches(sampler, seed=3, rank=0, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(tail, batches[2], strict=True))


def test_a_folder_of_pngs_runs_too_decoded_on_the_cpu(generated_dir):
    from pretrain.config import GeneratedDataConfig
    from pretrain.data.generated import generate

    root = generate(GeneratedDataConfig(num_classes=2, modes_per_class=1, train_per_mode=8, val_per_mode=1,
                                        image_size=32), generated_dir) / "train"
    decoder = _decoder(root, image_size=32)
    (images, labels, indices), = decoder.batches(GlobalBatchSampler(16, 16, seed=0), seed=0, rank=0, epoch=0)
    assert images.shape == (16, 3, 32, 32) and sorted(indices.tolist()) == list(range(16))


def test_a_file_no_decoder_reads_stops_the_step_with_its_name(jpeg_folder, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(jpeg_folder, root)
    broken = sorted(root.glob("class_01/0*.JPEG"))[0]
    broken.write_bytes(broken.read_bytes()[:5000])  # truncated: libjpeg-turbo refuses it, PIL too
    decoder = _decoder(root)
    sampler = GlobalBatchSampler(len(decoder.dataset), 24)
    with pytest.raises(CorruptImageError, match=f"^corrupt image file {broken}: "):
        list(decoder.batches(sampler, seed=0, rank=0, epoch=0))


def test_the_trainer_runs_and_resumes_on_the_gpu_path_and_falls_back_to_files_without_cuda(
        jpeg_folder, tmp_path, monkeypatch, capsys):
    def config(out, extra=()):
        return load_config(REPO / "pretrain/configs/sl_cpu.yaml", [
            f"data.root={jpeg_folder}", "data.image_size=32", "data.workers=0", "data.decoder=gpu", f"out_dir={out}",
            "model.arch=resnet18", "train.batch_size=8", "schedule.epochs=2", "schedule.warmup_epochs=0",
            "train.keep_every_epochs=1", "train.log_every=1", *extra])

    assert gpu_decoder_missing(CPU) == "data.decoder=gpu decodes on a CUDA device; this run trains on cpu"
    train(config(tmp_path / "files"))
    assert "warning: data.decoder=gpu decodes on a CUDA device; this run trains on cpu: the file path (PIL in 0 " \
           "loader workers) runs instead" in capsys.readouterr().out
    (start_log,) = (tmp_path / "files").rglob("log.jsonl")
    start = start_log.read_text().splitlines()[0]
    assert '"data_path": "files"' in start

    # the GPU path's code on the CPU (the check says yes): the trainer trains on it and resumes to the bit
    monkeypatch.setattr("pretrain.trainer.gpu_decoder_missing", lambda device: None)
    train(config(tmp_path / "whole"))
    (log,) = (tmp_path / "whole").rglob("log.jsonl")
    assert '"data_path": "gpu decoder"' in log.read_text().splitlines()[0]
    (ckpt_dir,) = (tmp_path / "whole").rglob("checkpoints")
    final = torch.load(ckpt_dir / "last.pt", weights_only=True)
    assert final["step"] == 6 and final["config"]["data"]["decoder"] == "gpu"
    resumed = tmp_path / "resumed" / ckpt_dir.relative_to(tmp_path / "whole")
    resumed.mkdir(parents=True)
    shutil.copyfile(ckpt_dir / "epoch_0001.pt", resumed / "last.pt")
    train(config(tmp_path / "resumed"))
    again = torch.load(resumed / "last.pt", weights_only=True)
    assert again["step"] == 6 and first_difference(final["model"], again["model"]) is None

    with pytest.raises(UserError, match="data.in_memory decodes every image once; data.decoder=gpu"):
        config(tmp_path / "both", ["data.in_memory=true"])
