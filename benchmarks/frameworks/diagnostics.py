"""Intra-class diagnostics of a backbone's features on a labelled set: does it keep intra-class variation?

- within/between ratio: mean squared distance of a feature to its class mean over the mean squared
  distance of class means to the global mean (0 when every class collapses to a point);
- effective rank per class: exp of the entropy of the class covariance's normalised eigenvalues
  (Roy & Vetterli 2007), averaged over classes; the mean normalised spectrum is kept for the plot;
- sub-mode separability: inside each class, leave-one-out kNN accuracy of the sub-mode label among
  that class's images, averaged over classes (chance is 1 / sub-modes);
- kNN label agreement: the fraction of each image's k nearest neighbours (itself left out) that share
  its class label.
Neighbours use cosine similarity; the variance measures use the features as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SPECTRUM_LENGTH = 32


def within_between_ratio(x: torch.Tensor, labels: torch.Tensor) -> float:
    x = x.double()
    means = torch.stack([x[labels == c].mean(0) for c in labels.unique()])
    index = torch.searchsorted(labels.unique(), labels)
    within = (x - means[index]).pow(2).sum(1).mean()
    between = (means[index] - x.mean(0)).pow(2).sum(1).mean()
    return (within / between.clamp_min(1e-12)).item()


def class_spectra(x: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean effective rank over classes, mean normalised eigenvalue spectrum, first 32 values)."""
    ranks, spectra = [], []
    for c in labels.unique():
        centred = x[labels == c].double()
        centred = centred - centred.mean(0)
        eigenvalues = torch.linalg.svdvals(centred).pow(2)
        p = eigenvalues / eigenvalues.sum().clamp_min(1e-12)
        ranks.append(math.exp(-(p[p > 0] * p[p > 0].log()).sum().item()))
        spectrum = torch.zeros(SPECTRUM_LENGTH, dtype=torch.float64)
        spectrum[: min(SPECTRUM_LENGTH, len(p))] = p[:SPECTRUM_LENGTH]
        spectra.append(spectrum)
    return sum(ranks) / len(ranks), torch.stack(spectra).mean(0)


def _leave_one_out_neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    z = F.normalize(x.float(), dim=1)
    sims = z @ z.T
    sims.fill_diagonal_(-math.inf)
    return sims.topk(min(k, len(x) - 1), dim=1).indices


def knn_label_agreement(x: torch.Tensor, labels: torch.Tensor, k: int = 20) -> float:
    neighbours = _leave_one_out_neighbours(x, k)
    return (labels[neighbours] == labels[:, None]).double().mean().item()


def submode_separability(x: torch.Tensor, labels: torch.Tensor, submodes: torch.Tensor, k: int = 5) -> float:
    """Mean over classes of the leave-one-out kNN (majority vote) accuracy of the sub-mode label."""
    accuracies = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        if len(members) < 2 or len(submodes[members].unique()) < 2:
            continue
        neighbours = _leave_one_out_neighbours(x[members], k)
        votes = submodes[members][neighbours]
        predicted = torch.mode(votes, dim=1).values
        accuracies.append((predicted == submodes[members]).double().mean().item())
    return sum(accuracies) / len(accuracies) if accuracies else math.nan


def projection_2d(x: torch.Tensor) -> torch.Tensor:
    """The first two principal components."""
    centred = x.double() - x.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).float()


def diagnose(x: torch.Tensor, labels: torch.Tensor, submodes: torch.Tensor | None = None, k: int = 20
             ) -> tuple[dict[str, float], torch.Tensor]:
    """(metrics, mean class spectrum) for features `x` with class `labels` and optional `submodes`."""
    effective_rank, spectrum = class_spectra(x, labels)
    metrics = {
        "within_between": within_between_ratio(x, labels),
        "effective_rank": effective_rank,
        "knn_agreement": 100 * knn_label_agreement(x, labels, k),
        "submode_separability": math.nan if submodes is None else 100 * submode_separability(x, labels, submodes),
    }
    return metrics, spectrum
