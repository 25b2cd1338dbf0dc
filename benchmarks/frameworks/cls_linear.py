"""The many-shot linear protocol (Kornblith et al. 2019, as ssl-transfer's `linear.py` runs it) on frozen features.

Per dataset: every image resized (bicubic) so its short side is 224 px and centre-cropped to 224, the backbone's
pooled features extracted once (cached with their provenance), then L2-regularised multinomial logistic
regression fitted by L-BFGS: the regularisation chosen among 45 values of wd log-spaced over 1e-6 ... 1e5
(C = 1 / wd, as scikit-learn's C) on the validation split, then refitted on train + val and scored on test with
the dataset's metric (top-1, or mean per-class accuracy). The 45 fits run from the weakest regularisation to the
strongest, each started from the previous solution (the reference's `warm_start=True` order), on the GPU when
there is one. Where ours differs from the reference is listed in `DIFFERENCES` (and by `protocols`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.data.classification import ClassificationSet, carve_validation, image_paths, labels_of, read_split
from benchmarks.frameworks.logistic import LogisticFit, fit, l2_of_C
from benchmarks.spec import RunSpec, TrainResult, split_opts
from pretrain.errors import UserError

WD_GRID = tuple(torch.logspace(-6, 5, 45).tolist())  # the reference's grid (float32 values), weakest first
VALIDATION = {"fraction": 0.2, "seed": 0}  # carved validation: numpy's legacy shuffle seeded 0, first 20 %
MAX_ITER = {"many-shot": 1000, "smoke": 100}  # L-BFGS iterations per fit (smoke: the reference's own cap)
GRID = {"many-shot": WD_GRID, "smoke": WD_GRID[::4]}  # smoke: every 4th value, 12 of the 45 (a pipeline check)
# Stop on a smaller change than the probe: validation scores then equal scikit-learn's fully converged ones at
# every C of the grid down to 1e-4 (tests/test_cls_linear.py); the probe keeps its 1e-12 (its tables' numbers).
TOLERANCE_CHANGE = 1e-14
IMAGE_SIZE = {"many-shot": 224, "smoke": 64}
BATCH_SIZE = 64  # feature extraction (no effect on the features)
DIFFERENCES = {
    "solver": "L-BFGS in float64 in torch (on the GPU when there is one), stopped at a gradient of 1e-7, a change "
              "of 1e-14 or 1000 iterations; the reference runs scikit-learn's lbfgs with its defaults (max_iter "
              "100, tol 1e-4, convergence warnings silenced), so its fits at large C stop before the optimum",
    "mean per-class accuracy": "the mean over the classes present in the test labels; the reference's confusion "
                               "matrix also has rows for classes only predicted (0 / 0), which never occurs when "
                               "every class has test images",
}


@dataclass
class Split:
    features: torch.Tensor
    labels: torch.Tensor


def voc07_average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """PASCAL VOC 2007's 11-point AP of one class, as the reference computes it: the precision-recall curve of
    scikit-learn's `precision_recall_curve` (one point per distinct score, then precision 1 at recall 0), and at
    each recall threshold t in 0, 0.1, ..., 1 the highest precision at recall >= t (0 if none)."""
    order = torch.argsort(scores.double().cpu(), descending=True, stable=True)
    ranked, hits = scores.double().cpu()[order], positive.cpu()[order].double()
    true_positives, false_positives = torch.cumsum(hits, 0), torch.cumsum(1 - hits, 0)
    last_of_score = torch.ones(len(ranked), dtype=torch.bool)  # one point per distinct score: its last image
    last_of_score[:-1] = ranked[1:] != ranked[:-1]
    tp, fp = true_positives[last_of_score], false_positives[last_of_score]
    positives = hits.sum()
    precision = torch.cat([tp / (tp + fp), torch.ones(1)])
    recall = torch.cat([tp / positives if positives > 0 else torch.zeros_like(tp), torch.zeros(1)])
    ap = 0.0
    for t in np.linspace(0, 1, 11).tolist():  # numpy's values (0.30000000000000004, ...), as the reference's
        reached = recall >= t
        ap += (precision[reached].max().item() if reached.any() else 0.0) / 11
    return ap


def metric_value(metric: str, scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The dataset's metric, in %, of class scores (n, classes) against labels: (n,) class indices, or for
    `map11` (n, classes) 0/1."""
    if metric == "map11":
        return 100.0 * sum(voc07_average_precision(scores[:, c], labels[:, c])
                           for c in range(labels.shape[1])) / labels.shape[1]
    predicted = scores.argmax(1).cpu()
    labels = labels.cpu()
    if metric == "top1":
        return 100.0 * (predicted == labels).double().mean().item()
    if metric == "mean_per_class":
        per_class = [(predicted[labels == c] == c).double().mean().item() for c in labels.unique().tolist()]
        return 100.0 * sum(per_class) / len(per_class)
    raise ValueError(f"unknown metric {metric}")


@dataclass
class Classifier:
    """One multinomial fit, or for a multi-label metric one binary fit per class (the reference's mAP path)."""

    fits: list[LogisticFit]

    @property
    def iterations(self) -> int:
        return sum(f.iterations for f in self.fits)

    @property
    def evaluations(self) -> int:
        return sum(f.evaluations for f in self.fits)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.fits) == 1 and self.fits[0].weight.shape[1] > 1:
            return self.fits[0].scores(x)
        return torch.stack([f.scores(x) for f in self.fits], dim=1)


def fit_classifier(data: Split, metric: str, num_classes: int, C: float, init: Classifier | None, max_iter: int
                   ) -> Classifier:
    l2 = l2_of_C(C, len(data.labels))
    if metric != "map11":
        return Classifier([fit(data.features, data.labels, num_classes, l2, init=init.fits[0] if init else None,
                               max_iter=max_iter, tolerance_change=TOLERANCE_CHANGE)])
    return Classifier([fit(data.features, data.labels[:, c], 2, l2, init=init.fits[c] if init else None,
                           max_iter=max_iter, binary=True, tolerance_change=TOLERANCE_CHANGE)
                       for c in range(data.labels.shape[1])])


@dataclass
class Search:
    best_C: float
    scores: dict[float, float]  # C -> validation score
    iterations: int  # L-BFGS iterations of all 45 fits
    evaluations: int = 0  # their objective and gradient evaluations


def search_C(train: Split, val: Split, metric: str, num_classes: int, warm: bool = True,
             grid: tuple[float, ...] = WD_GRID, max_iter: int = MAX_ITER["many-shot"], progress: str | None = None
             ) -> Search:
    """The C (= 1 / wd) with the best validation score; ties go to the first in grid order (the weakest
    regularisation), as the reference keeps a best score only when a later one is strictly higher."""
    previous: Classifier | None = None
    scores, iterations, evaluations, best_C, best = {}, 0, 0, None, -math.inf
    wds = grid
    if progress:
        from tqdm import tqdm

        wds = tqdm(grid, desc=progress, leave=False, disable=None)  # a bar on a terminal only
    for wd in wds:
        C = 1.0 / wd
        result = fit_classifier(train, metric, num_classes, C, previous if warm else None, max_iter)
        previous, iterations, evaluations = result, iterations + result.iterations, evaluations + result.evaluations
        scores[C] = metric_value(metric, result.scores(val.features), val.labels)
        if scores[C] > best:
            best_C, best = C, scores[C]
    return Search(best_C, scores, iterations, evaluations)


def evaluate(train: Split, val: Split, test: Split, metric: str, num_classes: int, device: str = "cpu",
             schedule: str = "many-shot", progress: str | None = None) -> dict[str, float]:
    """Choose C on (train, val), refit on train + val, score test: the dataset's row of the protocol."""
    on = [Split(s.features.to(device), s.labels.to(device)) for s in (train, val, test)]
    max_iter = MAX_ITER[schedule]
    search = search_C(on[0], on[1], metric, num_classes, grid=GRID[schedule], max_iter=max_iter, progress=progress)
    trainval = Split(torch.cat([on[0].features, on[1].features]), torch.cat([on[0].labels, on[1].labels]))
    final = fit_classifier(trainval, metric, num_classes, search.best_C, None, max_iter)
    return {"score": metric_value(metric, final.scores(on[2].features), on[2].labels), "C": search.best_C,
            "val_score": search.scores[search.best_C], "search_iterations": search.iterations,
            "refit_iterations": final.iterations}


def feature_cache(spec: RunSpec) -> Path:
    """Shared by every run of a checkpoint under one --out: `<out>/cls-linear/frozen/feature-cache` (a run's
    work folder is four levels below). Features do not depend on the seed; the image size is in the file name."""
    return spec.work_dir.parents[3] / "feature-cache"


def first_per_class(labels: torch.Tensor, count: int, what: str) -> list[int]:
    """The indices of the first `count` images of every class, in the split's order (kept in that order)."""
    from benchmarks.data.coarse_fine import first_of_each_class

    if labels.ndim != 1:
        raise UserError(f"cls-linear: train_per_class is for single-label datasets; {what} has several labels an image")
    numbers = labels.numpy()
    return first_of_each_class(numbers, count, np.unique(numbers).tolist(),
                               f"cls-linear: {what} training split (train_per_class)").tolist()


def cached_features(dataset: ClassificationSet, root: Path, split: str, model: torch.nn.Module, transform: Any,
                    device: str, cache: Path, checkpoint_sha256: str, image_size: int,
                    train_per_class: int | None = None) -> Split:
    """A split's pooled features: from the cache when its provenance matches, else extracted and cached.
    `train_per_class`: of the training split, only the first that many images of each class."""
    from torch.utils.data import Subset

    from benchmarks.frameworks.frozen import pooled_features
    from pretrain.files import atomic_write_bytes

    data = read_split(dataset, root, split, transform)
    paths, labels = image_paths(data), labels_of(data)
    subset = train_per_class if split == "train" else None
    if subset:
        keep = first_per_class(labels, subset, dataset.title)
        data, labels = Subset(data, keep), labels[keep]
        paths = None if paths is None else [paths[i] for i in keep]
    listing = hashlib.sha256("\n".join(paths).encode() if paths else str(len(data)).encode()).hexdigest()
    provenance = {"checkpoint_sha256": checkpoint_sha256, "dataset": dataset.name, "split": split,
                  "root": str((root / dataset.where).resolve()), "images": len(data), "files_sha256": listing,
                  "image_size": image_size, "transform": repr(transform), "torch": str(torch.__version__),
                  **({"train_per_class": subset} if subset else {})}
    part = f"-first{subset}" if subset else ""
    file = cache / checkpoint_sha256[:16] / f"{dataset.name}-{split}-{image_size}px{part}.pt"
    if file.is_file():
        try:
            stored = torch.load(file, weights_only=True)
        except Exception:  # noqa: BLE001 - a cache file that does not load is extracted again
            stored = {}
        if isinstance(stored, dict) and stored.get("provenance") == provenance:
            return Split(stored["features"], stored["labels"])
    try:
        features = pooled_features(model, data, device, BATCH_SIZE, progress=f"{dataset.name} {split} features")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors name the file, or not: say which dataset
        raise UserError(f"{dataset.title} ({split}): an image cannot be read: {e}") from None
    buffer = io.BytesIO()
    torch.save({"features": features, "labels": labels, "provenance": provenance}, buffer)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(file, buffer.getvalue())
    return Split(features, labels)


def splits_of(dataset: ClassificationSet, extract: Any) -> tuple[Split, Split, Split]:
    """(train, val, test): the dataset's own validation split, or the protocol's 20 % carved from train."""
    train, test = extract("train"), extract("test")
    if dataset.validation == "predefined":
        return train, extract("val"), test
    keep, held = (torch.from_numpy(i) for i in carve_validation(len(train.labels), **VALIDATION))
    return (Split(train.features[keep], train.labels[keep]), Split(train.features[held], train.labels[held]), test)


@dataclass(frozen=True)
class Options:
    """cls-linear's --opts: `datasets=cifar10,dtd` (DATASETS= in make; None: every protocol dataset found),
    `image_size=N` (IMAGE_SIZE=; None: the schedule's, 224 for many-shot) and `train_per_class=N`
    (TRAIN_PER_CLASS=; None: every training image). Both sizes depart from the protocol, for a run at a reduced
    size or of backbones trained at another resolution (the real-data tier's 32 px); the run records them."""

    datasets: list[str] | None = None
    image_size: int | None = None
    train_per_class: int | None = None


def cls_options(opts: tuple[str, ...]) -> Options:
    values: dict[str, Any] = {}
    for key, value in split_opts(opts):
        if key == "datasets":
            values[key] = [n.strip() for n in value.split(",") if n.strip()]
        elif key == "image_size":
            if not value.isdigit() or not 8 <= int(value) <= 1024:
                raise UserError(f"cls-linear: image_size={value} is not a size in pixels (8 ... 1024)")
            values[key] = int(value)
        elif key == "train_per_class":
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"cls-linear: train_per_class={value} is not a number of images")
            values[key] = int(value)
        else:
            raise UserError("cls-linear takes the --opts keys datasets=name,name, image_size=N and train_per_class=N "
                            f"(got '{key}')")
    return Options(**values)


def run_cls_linear(spec: RunSpec) -> TrainResult:
    """Every dataset found under the data root (or those named): features, C search, refit, test score."""
    from PIL import Image
    from torchvision import transforms

    from benchmarks.data.classification import select
    from benchmarks.frameworks.frozen import frozen_backbone, input_steps
    from pretrain.checkpoint import sha256_of

    options = cls_options(spec.opts)
    datasets, skipped = select(spec.data_root, options.datasets)
    for line in skipped:
        print(f"cls-linear: {line}", flush=True)
    image_size = options.image_size or IMAGE_SIZE[spec.schedule]
    if image_size != IMAGE_SIZE[spec.schedule]:
        print(f"cls-linear: images at {image_size} px (image_size={image_size}), not the {spec.schedule} "
              f"schedule's {IMAGE_SIZE[spec.schedule]} px", flush=True)
    if options.train_per_class:
        print(f"cls-linear: the first {options.train_per_class} training images of each class "
              f"(train_per_class={options.train_per_class}), not every one", flush=True)
    model, source = frozen_backbone(spec.weights, spec.device)
    transform = transforms.Compose([transforms.Resize(image_size, interpolation=Image.BICUBIC),
                                    transforms.CenterCrop(image_size), *input_steps(source)])
    cache, checkpoint_sha256 = feature_cache(spec), sha256_of(spec.weights)
    metrics, details = {}, {}
    for dataset in datasets:
        def extract(split: str, dataset: ClassificationSet = dataset) -> Split:
            return cached_features(dataset, spec.data_root, split, model, transform, spec.device, cache,
                                   checkpoint_sha256, image_size, options.train_per_class)

        train, val, test = splits_of(dataset, extract)
        row = evaluate(train, val, test, dataset.metric, dataset.num_classes, spec.device, spec.schedule,
                       progress=f"{dataset.name}: C search")
        metrics[dataset.name] = row["score"]
        details[dataset.name] = {**row, "metric": dataset.metric, "train": len(train.labels),
                                 "val": len(val.labels), "test": len(test.labels)}
        print(f"cls-linear {dataset.name}: {row['score']:.2f} ({dataset.metric}), C {row['C']:.4g}", flush=True)
    metrics["mean"] = sum(metrics.values()) / len(metrics)
    metrics["datasets"] = float(len(datasets))
    resolved = {"task": "cls-linear", "data": str(spec.data_root), "datasets": [d.name for d in datasets],
                "not_found": skipped, "image_size": image_size, "schedule_image_size": IMAGE_SIZE[spec.schedule],
                "train_per_class": options.train_per_class or "all",
                "resize": "bicubic, short side, then centre crop",
                "features": "global average pool of the last stage", "wd_grid": list(GRID[spec.schedule]),
                "C": "1 / wd",
                "validation": {**VALIDATION, "predefined": [d.name for d in datasets if d.validation == "predefined"]},
                "solver": {"name": "L-BFGS float64", "max_iter": MAX_ITER[spec.schedule], "tolerance_grad": 1e-7,
                           "tolerance_change": TOLERANCE_CHANGE, "warm_start": "along the grid, weakest first"},
                "per_dataset": details}
    return TrainResult(json.dumps(resolved, indent=1), {"cls": metrics}, {"world_size": 1})


def protocol_settings(schedule: str, datasets: list[str]) -> dict[str, Any]:
    """Our protocol as comparable settings (`python -m benchmarks protocols`), for these datasets."""
    from benchmarks.data.classification import DATASETS

    return {
        "image_size": IMAGE_SIZE[schedule], "resize": "short side, bicubic", "crop": "centre",
        "normalisation": "the backbone's recorded mean and std (ImageNet's)", "features": "global average pool",
        "wd_grid": "logspace(-6, 5, 45)", "C": "1 / wd", "selection": "first strictly best validation score, wd "
                                                                       "ascending",
        "validation.fraction": VALIDATION["fraction"], "validation.seed": VALIDATION["seed"],
        "validation.predefined": sorted(n for n in datasets if DATASETS[n].validation == "predefined"),
        "refit": "train + val", "solver.name": "L-BFGS, torch, float64", "solver.max_iter": MAX_ITER[schedule],
        "solver.tol": f"gradient 1e-7, change {TOLERANCE_CHANGE:g}", "solver.warm_start": True,
        "preprocessing": "none (raw features)", **{f"metric.{n}": DATASETS[n].metric for n in datasets},
    }
