"""cls-linear, the many-shot linear protocol: fits and C search against scikit-learn's LogisticRegression (the
reference's solver), the reference's validation draw, each reader on generated files in its official layout, the
missing-dataset errors, the feature cache, and a run end to end."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from benchmarks.data.classification import (
    DATASETS,
    PROTOCOL_DATASETS,
    carve_validation,
    image_paths,
    labels_of,
    read_split,
    select,
)
from benchmarks.data.classification_generated import CLASSES, PER_SPLIT, generate_classification
from benchmarks.frameworks.cls_linear import WD_GRID, Split, evaluate, metric_value, search_C, voc07_average_precision
from benchmarks.frameworks.logistic import fit, l2_of_C
from pretrain.errors import UserError


def _gaussians(seed: int, classes: int = 3, dim: int = 20, train: int = 60, val: int = 600, spread: float = 0.25
               ) -> tuple[Split, Split]:
    """Classes as overlapping Gaussians in 20 dimensions, few training images: a middle C wins on validation."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * spread

    def draw(n: int) -> Split:
        labels = torch.arange(n) % classes
        return Split((centres[labels] + torch.randn(n, dim, generator=g)).double(), labels)

    return draw(train), draw(val)


def _reference_search(train: Split, val: Split) -> tuple[float, dict[float, float]]:
    """ssl-transfer's loop with scikit-learn, run to convergence: C = 1 / wd over the grid, warm starts, a best kept
    only when strictly higher."""
    model = LogisticRegression(warm_start=True, max_iter=10000, tol=1e-10)
    best, best_C, scores = 0.0, None, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for wd in WD_GRID:
            model.set_params(C=1.0 / wd)
            model.fit(train.features.numpy(), train.labels.numpy())
            scores[1.0 / wd] = 100.0 * model.score(val.features.numpy(), val.labels.numpy())
            if scores[1.0 / wd] > best:
                best, best_C = scores[1.0 / wd], 1.0 / wd
    return best_C, scores


def test_the_fit_is_scikit_learns_multinomial_and_binary_logistic_regression():
    train, val = _gaussians(0, dim=8, train=200)
    for C in (1e-3, 0.1, 10.0):
        ours = fit(train.features, train.labels, 3, l2_of_C(C, 200), max_iter=1000)
        theirs = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(train.features.numpy(),
                                                                           train.labels.numpy())
        logits = ours.scores(val.features).numpy()
        reference = theirs.decision_function(val.features.numpy())
        # softmax logits are defined up to a shift per image
        centred = [a - a.mean(1, keepdims=True) for a in (logits, reference)]
        assert np.abs(centred[0] - centred[1]).max() < 1e-3, C
        assert (logits.argmax(1) == theirs.predict(val.features.numpy())).all()
    # one binary label: scikit-learn's one weight vector
    binary = (train.labels == 1).long()
    ours = fit(train.features, binary, 2, l2_of_C(0.5, 200), binary=True, max_iter=1000)
    theirs = LogisticRegression(C=0.5, tol=1e-12, max_iter=100000).fit(train.features.numpy(), binary.numpy())
    assert np.abs(ours.scores(val.features).numpy() - theirs.decision_function(val.features.numpy())).max() < 1e-4


def test_the_search_chooses_scikit_learns_C_and_warm_starts_reach_the_same_optimum_in_fewer_iterations():
    train, val = _gaussians(1)
    reference_C, reference_scores = _reference_search(train, val)
    warm = search_C(train, val, "top1", 3)
    assert warm.best_C == reference_C and 0.01 < warm.best_C < 1.0  # a clear case: a middle C, not an end
    # every validation score equals the converged reference's, but at the strongest penalties (C < 1e-4), where
    # the weights are ~1e-5 and images tie to rounding
    assert {C: s for C, s in warm.scores.items() if C > 1e-4} == {C: s for C, s in reference_scores.items()
                                                                 if C > 1e-4}
    cold = search_C(train, val, "top1", 3, warm=False)
    assert cold.best_C == warm.best_C and cold.scores[cold.best_C] == warm.scores[warm.best_C]
    assert warm.iterations < cold.iterations, (warm.iterations, cold.iterations)
    test = _gaussians(2, train=300)[0]
    row = evaluate(train, val, test, "top1", 3)
    refit = LogisticRegression(C=reference_C, tol=1e-12, max_iter=100000).fit(
        torch.cat([train.features, val.features]).numpy(), torch.cat([train.labels, val.labels]).numpy())
    assert row["C"] == reference_C
    assert row["score"] == pytest.approx(100.0 * refit.score(test.features.numpy(), test.labels.numpy()))


def test_mean_per_class_accuracy_is_balanced_accuracy():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    scores = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1, 1, 2, 0, 2, 2, 1]), 3).double()
    assert metric_value("mean_per_class", scores, labels) == pytest.approx(
        100 * balanced_accuracy_score(labels.numpy(), scores.argmax(1).numpy()))
    assert metric_value("top1", scores, labels) == pytest.approx(70.0)


def _reference_voc_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """ssl-transfer's voc_eval_cls: scikit-learn's precision-recall curve, then the 11-point VOC2007 AP."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(targets, scores)
    return sum((precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11 for t in np.linspace(0, 1, 11))


def test_voc2007_map_is_the_references_11_point_ap_and_its_search_fits_one_binary_model_per_class():
    rng = np.random.default_rng(0)
    for trial in range(20):
        targets = (rng.random(40) < 0.3).astype(int)
        targets[trial % 40] = 1
        scores = np.round(rng.normal(size=40) + targets * rng.uniform(0, 2), 1)  # rounded: ties between images
        assert voc07_average_precision(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(
            _reference_voc_ap(targets, scores), abs=1e-12), trial
    # multi-label: per class a binary model, scored by its decision values; mAP = the mean over classes
    train, val = _gaussians(3, dim=8, train=120, val=60)
    multi = lambda split: Split(split.features, torch.nn.functional.one_hot(split.labels, 3))  # noqa: E731
    search = search_C(multi(train), multi(val), "map11", 3, grid=WD_GRID[::11])
    for C, score in search.scores.items():
        per_class = []
        for c in range(3):
            model = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(train.features.numpy(),
                                                                           (train.labels == c).numpy())
            decision = model.decision_function(val.features.numpy())
            per_class.append(_reference_voc_ap((val.labels == c).numpy(), decision))
        assert score == pytest.approx(100 * np.mean(per_class), abs=1e-9), C


def test_the_carved_validation_split_is_the_references_draw():
    indices = list(range(137))
    np.random.seed(0)  # ssl-transfer: np.random.seed(random_seed); np.random.shuffle(indices); first 20 %
    np.random.shuffle(indices)
    train, held = carve_validation(137)
    assert held.tolist() == indices[:27] and train.tolist() == indices[27:]


def _reference_caltech_split(root) -> list[str]:
    """ssl-transfer's create_caltech101_splits as its code runs: ImageFolder, np.random.seed(0), per class
    np.random.choice(indices, 30) (with replacement), sorted; its repository's list keeps each image once."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(root / "caltech101" / "101_ObjectCategories"))
    np.random.seed(0)
    by_class = {label: [] for label in range(len(dataset.classes))}
    for i, (_, label) in enumerate(dataset.samples):
        by_class[label].append(i)
    drawn = []
    for label in by_class:
        drawn.extend(np.sort(np.random.choice(by_class[label], 30)).tolist())
    return ["/".join(Path(dataset.samples[i][0]).parts[-2:]) for i in dict.fromkeys(drawn)]


def test_every_reader_reads_its_official_layout_and_a_missing_dataset_is_one_line(tmp_path):
    root = generate_classification(tmp_path)
    found, skipped = select(root, None)
    assert [d.name for d in found] == PROTOCOL_DATASETS == list(DATASETS)[:11] and skipped == []
    found += select(root, ["fmnist"])[0]  # read when named, never in a run over every dataset
    expected = {"predefined": {s: n * CLASSES for s, n in PER_SPLIT.items()},
                "carved": {"train": (PER_SPLIT["train"] + PER_SPLIT["val"]) * CLASSES, "test": 12}}
    for dataset in found:
        counts = expected[dataset.validation]
        if dataset.name == "cifar10":
            counts = {"train": 30, "test": 12}  # five batches of six
        if dataset.name == "voc2007":
            counts = {"train": 12, "val": 12, "test": 20}  # VOC's halves of trainval, and test
        if dataset.name == "caltech101":  # the reference's split: the distinct images of 30 draws a class
            counts = {"train": len(_reference_caltech_split(root)), "test": 120 - len(_reference_caltech_split(root))}
            assert [Path(p).relative_to(root / dataset.where).as_posix() for p in image_paths(
                read_split(dataset, root, "train"))] == _reference_caltech_split(root)
        if dataset.name == "sun397":  # the first partition's lists, not every image in the folders
            on_disk = len(list((root / "SUN397").rglob("sun_*.jpg")))
            assert on_disk == (PER_SPLIT["train"] + PER_SPLIT["val"] + PER_SPLIT["test"]) * CLASSES + 1
        for split, count in counts.items():
            data = read_split(dataset, root, split, transform=lambda image: torch.tensor(image.size))
            labels = labels_of(data)
            size, label = data[0]
            smallest = 28 if dataset.name == "fmnist" else 32  # Fashion-MNIST's 28 x 28 grey images, as RGB
            assert len(data) == count and (size >= smallest).all(), dataset.name  # the transform saw the PIL image
            assert read_split(dataset, root, split)[0][0].mode == "RGB", dataset.name
            if dataset.metric == "map11":  # 20 binary labels, every class positive in every split
                assert labels.shape == (count, 20) and (labels.sum(0) > 0).all() and torch.equal(label, labels[0])
            else:
                assert sorted(set(labels.tolist())) == list(range(CLASSES)) and label == labels[0], dataset.name
    # one dataset gone: skipped with where it was looked for; named, it is an error; none at all, an error
    shutil.rmtree(root / "oxford-iiit-pet")
    found, skipped = select(root, None)
    assert "pets" not in [d.name for d in found]
    assert skipped == [f"pets: not found at {root / 'oxford-iiit-pet'} ({DATASETS['pets'].source})"]
    with pytest.raises(UserError, match=r"^cls-linear dataset\(s\) not found: pets \(looked for .*oxford-iiit-pet\)$"):
        select(root, ["dtd", "pets"])
    with pytest.raises(UserError, match=r"unknown cls-linear dataset\(s\) imagenet; known: aircraft, caltech101, cars"):
        select(root, ["imagenet"])
    with pytest.raises(UserError, match=r"^no cls-linear dataset under .*empty: looked for fgvc-aircraft-2013b/"):
        select(tmp_path / "empty", None)
    (tmp_path / "only-fmnist").mkdir()
    shutil.copytree(root / "fashion-mnist", tmp_path / "only-fmnist" / "fashion-mnist")
    with pytest.raises(UserError, match=r"VOCdevkit/VOC2007/ \(voc2007\) \(fashion-mnist/ is there: name it with "
                                        r"DATASETS=fmnist\)$"):
        select(tmp_path / "only-fmnist", None)
    (tmp_path / "only-fmnist" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"^Fashion-MNIST file t10k-labels-idx1-ubyte\[.gz\] not found in "):
        read_split(DATASETS["fmnist"], tmp_path / "only-fmnist", "test")
    # incomplete: a label list gone, one line naming the dataset and the file
    (root / "dtd" / "dtd" / "labels" / "val1.txt").unlink()
    with pytest.raises(UserError, match=r"^DTD under .*dtd/dtd cannot be read \(val split\): .*val1.txt"):
        read_split(DATASETS["dtd"], root, "val")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"^CIFAR-10 incomplete at .*: missing data_batch_3$"):
        read_split(DATASETS["cifar10"], root, "train")


def test_a_run_extracts_features_once_and_scores_every_dataset(tmp_path, monkeypatch):
    from benchmarks.commands.dryrun import random_backbone
    from benchmarks.runner import run_benchmark
    from pretrain.files import read_json

    ckpt = random_backbone(tmp_path, "resnet18")
    root = generate_classification(tmp_path / "data")
    run_dir = run_benchmark("cls-linear", ckpt, "frozen", "smoke", data=root, out=tmp_path / "runs", device="cpu",
                            opts=["datasets=dtd,cifar10"])
    result = read_json(run_dir / "result.json")
    assert result["status"] == "finished" and set(result["metrics"]["cls"]) == {"dtd", "cifar10", "mean", "datasets"}
    assert result["metrics"]["cls"]["datasets"] == 2.0
    cached = sorted(p.name for p in (tmp_path / "runs" / "cls-linear" / "frozen" / "feature-cache").rglob("*.pt"))
    assert cached == ["cifar10-test-64px.pt", "cifar10-train-64px.pt", "dtd-test-64px.pt", "dtd-train-64px.pt",
                      "dtd-val-64px.pt"]
    # another run of the checkpoint reads the cached features: no image is decoded again
    import benchmarks.frameworks.frozen as frozen

    monkeypatch.setattr(frozen, "pooled_features", lambda *a, **k: pytest.fail("features extracted again"))
    again = run_benchmark("cls-linear", ckpt, "frozen", "smoke", data=root, out=tmp_path / "runs", device="cpu",
                          opts=["datasets=dtd"], seed=1)
    assert read_json(again / "result.json")["metrics"]["cls"]["dtd"] == result["metrics"]["cls"]["dtd"]


def test_fashion_mnist_runs_when_named_at_the_sizes_asked_and_bad_options_are_one_line(tmp_path):
    from benchmarks.commands.dryrun import random_backbone
    from benchmarks.frameworks.cls_linear import first_per_class
    from benchmarks.runner import resolve_run, run_benchmark
    from pretrain.files import read_json

    ckpt = random_backbone(tmp_path, "resnet18")
    root = generate_classification(tmp_path / "data")
    run_dir = run_benchmark("cls-linear", ckpt, "frozen", "smoke", data=root, out=tmp_path / "runs", device="cpu",
                            opts=["datasets=fmnist", "image_size=32", "train_per_class=5"])
    result = read_json(run_dir / "result.json")
    assert set(result["metrics"]["cls"]) == {"fmnist", "mean", "datasets"}
    resolved = json.loads((run_dir / "config.yaml").read_text())  # the resolved config, as the task wrote it
    cached = sorted(p.name for p in (tmp_path / "runs" / "cls-linear" / "frozen" / "feature-cache").rglob("*.pt"))
    assert cached == ["fmnist-test-32px.pt", "fmnist-train-32px-first5.pt"]
    assert (resolved["image_size"], resolved["schedule_image_size"], resolved["datasets"]) == (32, 64, ["fmnist"])
    # 5 of each class's 11 training images, the first in the files' order: 3 of the 15 validate, 12 fit
    details = resolved["per_dataset"]["fmnist"]
    assert (resolved["train_per_class"], details["train"], details["val"], details["test"]) == (5, 12, 3, 12)
    from benchmarks.data.fashion_mnist import read_split as read_idx_split

    labels = torch.from_numpy(read_idx_split(root / "fashion-mnist", "train").fine)
    keep = first_per_class(labels, 5, "Fashion-MNIST")
    assert len(keep) == 15 and keep == sorted(keep)
    assert all(torch.equal(torch.nonzero(labels == c).flatten()[:5], torch.tensor([i for i in keep if labels[i] == c]))
               for c in range(3))
    with pytest.raises(UserError, match=r"^cls-linear: Fashion-MNIST training split \(train_per_class\): class 0 has "
                                        r"11 images, fewer than the 12 asked for$"):
        first_per_class(labels, 12, "Fashion-MNIST")
    with pytest.raises(UserError, match=r"^cls-linear: train_per_class is for single-label datasets; VOC2007"):
        first_per_class(torch.zeros(4, 20), 1, "VOC2007")
    for opts, message in ((["image_size=big"], r"^cls-linear: image_size=big is not a size in pixels"),
                          (["image_size=4"], r"^cls-linear: image_size=4 is not a size in pixels"),
                          (["train_per_class=0"], r"^cls-linear: train_per_class=0 is not a number of images"),
                          (["lr=0.1"], r"^cls-linear takes the --opts keys datasets=name,name, image_size=N and "
                                       r"train_per_class=N \(got 'lr'\)$"),
                          (["datasets=fmnist,imagenet"], r"^unknown cls-linear dataset\(s\) imagenet; known: ")):
        with pytest.raises(UserError, match=message):
            resolve_run("cls-linear", ckpt, "frozen", "smoke", 0, root, tmp_path / "runs", opts=opts)


def test_a_corrupt_image_is_one_error_naming_the_dataset_and_the_file(tmp_path):
    from torchvision import transforms

    from benchmarks.frameworks.cls_linear import cached_features

    root = generate_classification(tmp_path)
    broken = sorted((root / "dtd" / "dtd" / "images" / "texture1").glob("*_test*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    transform = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()])
    args = (pool, transform, "cpu", tmp_path / "cache", "0" * 64, 32)
    assert cached_features(DATASETS["dtd"], root, "train", *args).features.shape == (24, 3)  # the others read
    with pytest.raises(UserError, match=rf"^DTD \(test\): an image cannot be read: .*{broken.name}"):
        cached_features(DATASETS["dtd"], root, "test", *args)
    assert not list((tmp_path / "cache").rglob("dtd-test-*"))  # nothing cached for the failed split
