"""Frozen-feature probes, intra-class diagnostics, coarse-to-fine data, and their tables and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.frameworks.diagnostics import diagnose, knn_label_agreement, submode_separability
from benchmarks.frameworks.probe import Features, fit_logistic, linear_probe, stratified_split
from pretrain.config import GeneratedDataConfig
from pretrain.data import IndexedImageFolder, read_coarse_map
from pretrain.data.generated import fine_view, generate
from pretrain.errors import UserError
from pretrain.knn_monitor import knn_predict
from tests.conftest import run_main, set_args

TINY = GeneratedDataConfig(num_classes=3, modes_per_class=2, train_per_mode=6, val_per_mode=3, image_size=32)


def _structured_inputs(classes=4, modes=3, per_mode=12, dim=48, seed=0):
    """Inputs whose classes are unions of distinct sub-modes (like the embedded data)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, modes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(modes * per_mode)
    submodes = torch.arange(modes).repeat_interleave(per_mode).repeat(classes)
    x = centres[labels, submodes] + torch.randn(len(labels), dim, generator=g)
    return x, labels, submodes


def test_diagnostics_order_a_random_projection_above_a_class_collapsing_backbone():
    x, labels, submodes = _structured_inputs()
    random_projection = torch.nn.Linear(x.shape[1], 32, bias=False)
    torch.nn.init.normal_(random_projection.weight, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kept = random_projection(x)
        # A backbone that learned to collapse: every image maps to (almost) its class centre.
        class_centres = torch.stack([kept[labels == c].mean(0) for c in range(4)])
        collapsed = class_centres[labels] + 1e-3 * torch.randn(kept.shape, generator=torch.Generator().manual_seed(2))
    kept_metrics, kept_spectrum = diagnose(kept, labels, submodes)
    collapsed_metrics, collapsed_spectrum = diagnose(collapsed, labels, submodes)
    assert kept_metrics["within_between"] > 10 * collapsed_metrics["within_between"]
    assert collapsed_metrics["within_between"] < 1e-4
    # What is left of a collapsed class is isotropic noise (a flat spectrum, a high effective rank);
    # what the random projection keeps is the sub-mode structure: its top eigenvalues carry most of
    # the class's variance.
    assert kept_spectrum[:2].sum() > 0.5 and collapsed_spectrum[:2].sum() < 0.3
    assert kept_metrics["submode_separability"] > 90  # sub-modes stay apart inside each class
    assert collapsed_metrics["submode_separability"] < 60  # chance is 33 %
    assert collapsed_metrics["knn_agreement"] == pytest.approx(100.0)
    assert kept_metrics["knn_agreement"] < collapsed_metrics["knn_agreement"]


def test_knn_and_agreement_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    train, train_labels = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    query = torch.randn(9, 6, generator=g)
    for k in (1, 5, 20, 60):
        expected = []
        for q in query:
            sims = [(F.cosine_similarity(q, t, dim=0).item(), int(label)) for t, label in zip(train, train_labels,
                                                                                              strict=True)]
            votes = [0.0, 0.0, 0.0]
            for sim, label in sorted(sims, reverse=True)[:k]:
                votes[label] += math.exp(sim / 0.07)
            expected.append(max(range(3), key=lambda c: votes[c]))
        assert knn_predict(train, train_labels, query, 3, k=k, chunk=4).tolist() == expected
    agreement = []
    for i, x in enumerate(train):
        others = sorted(((F.cosine_similarity(x, t, dim=0).item(), j) for j, t in enumerate(train) if j != i),
                        reverse=True)[:5]
        agreement += [float(train_labels[j] == train_labels[i]) for _, j in others]
    assert knn_label_agreement(train, train_labels, k=5) == pytest.approx(sum(agreement) / len(agreement))


def test_logistic_probe_reaches_the_optimum_that_plain_gradient_descent_finds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    weight, bias = fit_logistic(x, y, 3, l2=0.1)
    w = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for _ in range(20000):  # brute force: many small steps of gradient descent on the same objective
        loss = F.cross_entropy(x @ w + b, y) + 0.05 * w.pow(2).sum()
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w -= 0.5 * gw
            b -= 0.5 * gb
    assert torch.allclose(weight, w.detach(), atol=1e-5) and torch.allclose(bias, b.detach(), atol=1e-5)
    assert ((x @ weight + bias).argmax(1) == (x @ w + b).argmax(1)).all()


def test_linear_probe_picks_the_penalty_on_a_stratified_held_out_split():
    x, labels, _ = _structured_inputs(classes=3, modes=2, per_mode=10, dim=8)
    fit, held = stratified_split(labels, 0.2, seed=0)
    assert set(fit.tolist()) | set(held.tolist()) == set(range(len(labels))) and not set(fit.tolist()) & set(
        held.tolist())
    assert [int((labels[held] == c).sum()) for c in range(3)] == [4, 4, 4]
    val = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    result = linear_probe(Features(x, labels, val, labels, ["a", "b", "c"]))
    # Reference: the same selection written out by hand.
    standardise = lambda t, ref: (t - ref.mean(0)) / ref.std(0)  # noqa: E731
    held_out = {}
    for l2 in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        w, b = fit_logistic(standardise(x[fit], x[fit]), labels[fit], 3, l2)
        held_out[l2] = ((standardise(x[held], x[fit]).double() @ w + b).argmax(1) == labels[held]).double().mean()
    best = max(held_out, key=lambda l2: (held_out[l2], l2))
    w, b = fit_logistic(standardise(x, x), labels, 3, best)
    top1 = ((standardise(val, x).double() @ w + b).argmax(1) == labels).double().mean()
    assert result["linear_l2"] == best and result["linear_top1"] == pytest.approx(100 * top1.item())
    assert result["linear_heldout_top1"] == pytest.approx(100 * held_out[best].item())


def test_submode_separability_is_chance_when_sub_modes_are_shuffled():
    x, labels, submodes = _structured_inputs(modes=2, per_mode=20)
    assert submode_separability(x, labels, submodes) > 0.95
    shuffled = submodes[torch.randperm(len(submodes), generator=torch.Generator().manual_seed(0))]
    assert submode_separability(x, labels, shuffled) < 0.75


def test_coarse_map_turns_the_fine_view_back_into_the_coarse_dataset(tmp_path):
    root = generate(TINY, tmp_path)
    fine = fine_view(root)
    mapping = read_coarse_map(fine / "coarse_map.csv")
    assert len(mapping) == 6 and set(mapping.values()) == {"class_00", "class_01", "class_02"}
    fine_train = IndexedImageFolder(fine / "train")
    assert len(fine_train.classes) == 6 and len(fine_train) == 3 * 2 * 6
    coarse = IndexedImageFolder(fine / "train", coarse_map=mapping)
    original = IndexedImageFolder(root / "train")
    assert coarse.classes == original.classes
    # the same images (hard links), each with the label of its coarse class
    original_labels = {(Path(p).parent.name, Path(p).name): label for p, label in original.samples}
    coarse_labels = {(mapping[Path(p).parent.name], Path(p).name): label for p, label in coarse.samples}
    assert coarse_labels == original_labels
    submodes = {}
    for row in (root / "train_submodes.csv").read_text().splitlines()[1:]:
        path, _, submode = row.split(",")
        submodes[(Path(path).parent.name, Path(path).name)] = int(submode)
    for path, label in fine_train.samples:  # each fine folder holds exactly one sub-mode of one class
        folder = fine_train.classes[label]
        assert folder == f"{mapping[folder]}_m{submodes[(mapping[folder], Path(path).name)]}"
        assert Path(path).stat().st_ino == (root / "train" / mapping[folder] / Path(path).name).stat().st_ino
    (fine / "partial.csv").write_text("fine,coarse\nclass_00_m0,class_00\n")
    with pytest.raises(UserError, match="missing from the coarse map"):
        IndexedImageFolder(fine / "train", coarse_map=read_coarse_map(fine / "partial.csv"))


@pytest.mark.slow
def test_coarse_pretraining_then_fine_probe_end_to_end_with_tables_and_plots(tmp_path, tiny_overrides):
    fine = fine_view(generate(TINY, tmp_path / "data"))
    overrides = [o for o in tiny_overrides if not o.startswith("data.generated")] + [
        f"data.root={fine / 'train'}", f"data.coarse_map={fine / 'coarse_map.csv'}", "schedule.epochs=1"]
    from benchmarks.cli import main as benchmarks_main
    from pretrain.cli import main as pretrain_main

    # each step through its command's own entry point, in this process
    trained = run_main(pretrain_main, ["train", "--config", "pretrain/configs/sl_cpu.yaml", *set_args(overrides)])
    assert trained.returncode == 0, trained.stderr[-2000:]
    [ckpt] = (tmp_path / "run" / "export").glob("*.pth")
    assert torch.load(ckpt, weights_only=True)["meta"]["dataset_info"]["num_classes"] == 3  # coarse classes

    out = tmp_path / "bench"
    probed = run_main(benchmarks_main, ["run", "probe", "--framework", "frozen", "--schedule", "standard",
                                        "--ckpt", str(ckpt), "--data", str(fine), "--out", str(out)])
    assert probed.returncode == 0, probed.stderr[-2000:]
    [result] = out.glob("probe/frozen/standard/*/seed0/result.json")
    metrics = json.loads(result.read_text())["metrics"]
    assert 0 <= metrics["probe"]["linear_top1"] <= 100 and 0 <= metrics["probe"]["knn_top1"] <= 100
    assert metrics["diagnostics"]["within_between"] > 0 and 1 <= metrics["diagnostics"]["effective_rank"]
    assert 0 <= metrics["diagnostics"]["submode_separability"] <= 100  # sub-modes known from coarse_map.csv

    collected = run_main(benchmarks_main, ["collect", "--runs", str(out), "--out", str(tmp_path / "results")])
    assert collected.returncode == 0 and "by method" in collected.stdout, collected.stderr[-2000:]
    for name in ("probe.png", "probe_projection.png", "probe_spectra.png"):
        png = (tmp_path / "results" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    table = (tmp_path / "results" / "probe.md").read_text()
    assert "## By method" in table and "| sl |" in table and "linear_top1" in table
