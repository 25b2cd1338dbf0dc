"""Frozen-feature transfer: pooled backbone features, a linear probe and a weighted kNN classifier.

Linear probe: multinomial logistic regression on standardised pooled features, L2 penalty chosen
from a small grid on a held-out part of the training split (stratified), then refit on the whole
training split; full-batch L-BFGS in float64 (to a gradient tolerance of 1e-7, at most 300 iterations).
kNN: cosine similarity on L2-normalised features, the k = 20 nearest training images vote with
weight exp(similarity / 0.07) (the weighting of Wu et al. 2018, as used by DINO's kNN eval).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.spec import RunSpec, TrainResult
from pretrain.knn_monitor import knn_predict

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
HELD_OUT = 0.2


@dataclass
class Features:
    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]


def extract(ckpt: Path, data_root: Path, image_size: int | None = None, batch_size: int = 64,
            device: str = "cpu") -> Features:
    """Pooled features of `<data_root>/{train,val}` (ImageFolder) from the frozen backbone in `ckpt`."""
    from torchvision import transforms

    from benchmarks.frameworks.frozen import frozen_backbone, input_steps, pooled_features
    from pretrain.data import IndexedImageFolder, center_crop

    model, source = frozen_backbone(ckpt, device)
    transform = transforms.Compose([*center_crop(image_size or source.input.get("image_size") or 224),
                                    *input_steps(source)])
    out = {}
    for split in ("train", "val"):
        dataset = IndexedImageFolder(data_root / split, transform=transform)
        if split == "val" and dataset.classes != out["train"][2]:
            raise ValueError(f"{data_root}: train and val have different class folders")
        out[split] = (pooled_features(model, dataset, device, batch_size), dataset.targets.clone(), dataset.classes)
    return Features(out["train"][0], out["train"][1], out["val"][0], out["val"][1], out["train"][2])


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_W,b mean CE(xW + b, y) + l2/2 ||W||^2 (features as given), by full-batch L-BFGS."""
    from benchmarks.frameworks.logistic import fit

    result = fit(x, y, num_classes, l2, max_iter=max_iter)
    return result.weight, result.bias


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): `fraction` of every class held out (at least one if it has two)."""
    generator = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for label in labels.unique():
        index = (labels == label).nonzero().flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        n_held = min(len(index) - 1, max(1, round(fraction * len(index)))) if len(index) > 1 else 0
        held.append(index[:n_held])
        fit.append(index[n_held:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


def linear_probe(features: Features, seed: int = 0) -> dict[str, float]:
    num_classes = len(features.classes)
    fit, held = stratified_split(features.train_labels, HELD_OUT, seed)
    x_fit, x_held = _standardise(features.train[fit], features.train[held])
    scores = {}
    for l2 in L2_GRID:
        w, b = fit_logistic(x_fit, features.train_labels[fit], num_classes, l2)
        scores[l2] = ((x_held.double() @ w + b).argmax(1) == features.train_labels[held]).double().mean().item()
    best = max(L2_GRID, key=lambda l2: (scores[l2], l2))  # ties: the stronger penalty
    x_train, x_val = _standardise(features.train, features.val)
    w, b = fit_logistic(x_train, features.train_labels, num_classes, best)
    top1 = ((x_val.double() @ w + b).argmax(1) == features.val_labels).double().mean().item()
    return {"linear_top1": 100 * top1, "linear_l2": best, "linear_heldout_top1": 100 * scores[best]}


def knn_accuracy(features: Features, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    predicted = knn_predict(features.train, features.train_labels, features.val, len(features.classes), k,
                            temperature)
    return {"knn_top1": 100 * (predicted == features.val_labels).float().mean().item()}


def _coarse_labels(data_root: Path, features: Features) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """(class labels, sub-mode labels or None, class names) of the val set for the diagnostics: with a
    `coarse_map.csv` beside train/ and val/, the folders are sub-modes of their coarse class."""
    from pretrain.data import read_coarse_map

    map_file = data_root / "coarse_map.csv"
    if not map_file.is_file():
        return features.val_labels, None, features.classes
    mapping = read_coarse_map(map_file)
    coarse_names = sorted(set(mapping.values()))
    fine_to_coarse = torch.tensor([coarse_names.index(mapping[name]) for name in features.classes])
    return fine_to_coarse[features.val_labels], features.val_labels, coarse_names


def run_probe(spec: RunSpec) -> TrainResult:
    """The runner's task: probe and kNN on the data's own labels, diagnostics of the val features."""
    import json

    from benchmarks.frameworks.diagnostics import diagnose, projection_2d
    from pretrain.files import atomic_write_json

    weights, data_root, run_dir, seed = spec.weights, spec.data_root, spec.work_dir, spec.seed
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    features = extract(weights, data_root, device=spec.device)
    labels, submodes, class_names = _coarse_labels(data_root, features)
    diagnostics, spectrum = diagnose(features.val, labels, submodes)
    metrics = {"probe": {**linear_probe(features, seed), **knn_accuracy(features)}, "diagnostics": diagnostics}
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:2000].sort().values
    atomic_write_json(run_dir / "plot_data.json", {
        "projection": projection_2d(features.val)[keep].tolist(), "labels": labels[keep].tolist(),
        "submodes": None if submodes is None else submodes[keep].tolist(), "classes": class_names,
        "spectrum": spectrum.tolist()})
    resolved = {"task": "probe", "data": str(data_root), "labels": "folders (fine)" if submodes is not None
                else "folders", "diagnostic_labels": "coarse_map.csv" if submodes is not None else "folders",
                "linear": {"l2_grid": list(L2_GRID), "held_out": HELD_OUT, "solver": "L-BFGS float64"},
                "knn": {"k": 20, "temperature": 0.07, "similarity": "cosine"},
                "train_images": len(features.train), "val_images": len(features.val),
                "feature_dim": features.train.shape[1]}
    return TrainResult(json.dumps(resolved, indent=1), metrics, {"world_size": 1})
