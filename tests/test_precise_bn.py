"""Precise BN: the estimator the published Detectron2 protocols ran (fvcore up to d3b3b12: the equal-weight mean of
the batches' statistics), the same buffers on every rank, with plain and with synchronised layers."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from benchmarks.frameworks.precise_bn import buffer_digest, update_bn_stats
from pretrain.distributed import leave_group


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))


def _synced() -> nn.Module:
    """One naiveSyncBN layer on the input, as the C4 RoI head's res5 has them: per-rank batches of other sizes."""
    from detectron2.layers import NaiveSyncBatchNorm

    return nn.Sequential(NaiveSyncBatchNorm(3))


def _batches(rank: int, iterations: int = 3) -> list[torch.Tensor]:
    """What a multi-scale loader hands each rank: other images, other sizes (so other N x H x W)."""
    generator = torch.Generator().manual_seed(10 + rank)
    sizes = [(2, 9), (1, 12), (3, 7)] if rank == 0 else [(2, 14), (2, 8), (1, 10)]
    return [torch.randn(n, 3, s, s, generator=generator) * (1 + rank) + rank
            for n, s in sizes[:iterations]]


def _fvcore_96ee7f1(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """fvcore's update_bn_stats as of 96ee7f1 (2020-03-31), written out: momentum 1, then the running average of
    the buffers over the batches (one process)."""
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in layers:
        bn.momentum = 1.0
    means = [torch.zeros_like(bn.running_mean) for bn in layers]
    variances = [torch.zeros_like(bn.running_var) for bn in layers]
    with torch.no_grad():
        for index, batch in enumerate(batches):
            model(batch)
            for i, bn in enumerate(layers):
                means[i] += (bn.running_mean - means[i]) / (index + 1)
                variances[i] += (bn.running_var - variances[i]) / (index + 1)
    names = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return {**{f"{n}.running_mean": m for n, m in zip(names, means, strict=True)},
            **{f"{n}.running_var": v for n, v in zip(names, variances, strict=True)}}


def _precise_bn_worker(rank: int, world: int, init_file: str, out: str, which: str) -> None:
    import torch.distributed as dist
    from fvcore.nn.precise_bn import update_bn_stats as fvcore_update_bn_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = (_synced() if which == "synced" else _model()).train()
    if which == "fvcore":
        fvcore_update_bn_stats(model, iter(_batches(rank)), 3)
    else:
        update_bn_stats(model, iter(_batches(rank)), 3)
    torch.save({"state": model.state_dict(), "digest": buffer_digest(model)}, f"{out}/{which}-{rank}.pt")
    del model
    leave_group()  # together, after a barrier: a rank that closes gloo alone can abort at exit


def _run_two_ranks(tmp_path, which: str) -> list[dict]:
    mp.start_processes(_precise_bn_worker, args=(2, str(tmp_path / f"init-{which}"), str(tmp_path), which),
                       nprocs=2, start_method="spawn")
    return [torch.load(tmp_path / f"{which}-{rank}.pt") for rank in (0, 1)]


def _assert_buffers(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)


def test_precise_bn_gives_every_rank_the_equal_weight_mean_over_all_ranks_batches(tmp_path):
    ranks = _run_two_ranks(tmp_path, "ours")
    assert ranks[0]["digest"] == ranks[1]["digest"]
    for key in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
    # ... the estimator over the six batches in one process (three a rank: every batch weighs the same)
    _assert_buffers(ranks[0]["state"], _fvcore_96ee7f1(_model().train(), _batches(0) + _batches(1)))
    # the weights were not touched, and the statistics moved away from their initial values
    initial = _model().state_dict()
    assert torch.equal(ranks[0]["state"]["0.weight"], initial["0.weight"])
    assert not torch.allclose(ranks[0]["state"]["4.running_var"], initial["4.running_var"])


def test_with_synchronised_layers_and_other_batch_sizes_a_rank_the_estimate_is_the_references(tmp_path):
    """naiveSyncBN averages the ranks' batch means (and means of squares) with equal weights whatever their
    sizes; the reference's estimator then averages those synchronised statistics over the batches."""
    ranks = _run_two_ranks(tmp_path, "synced")
    assert ranks[0]["digest"] == ranks[1]["digest"]
    means, variances = [], []
    for first, second in zip(_batches(0), _batches(1), strict=True):
        mean = (first.mean(dim=(0, 2, 3)) + second.mean(dim=(0, 2, 3))) / 2
        square = ((first * first).mean(dim=(0, 2, 3)) + (second * second).mean(dim=(0, 2, 3))) / 2
        means.append(mean)
        variances.append(square - mean * mean)  # what NaiveSyncBatchNorm stores: the biased variance
    expected = {"0.running_mean": torch.stack(means).mean(0), "0.running_var": torch.stack(variances).mean(0)}
    _assert_buffers(ranks[0]["state"], expected)
    # the estimator of later fvcore (each batch weighted by its N x H x W, Bessel undone) gives another number
    # on these batches: this test fails for it
    counts = torch.tensor([sum(b.numel() // 3 for b in pair) for pair in zip(_batches(0), _batches(1), strict=True)],
                          dtype=torch.float64)
    weights = (counts / counts.sum())[:, None]
    population_mean = (weights * torch.stack(means).double()).sum(0)
    population_var = (weights * (torch.stack(variances).double() + torch.stack(means).double() ** 2)).sum(0) \
        - population_mean ** 2
    assert (population_var - expected["0.running_var"].double()).abs().max() > 1e-2


def test_fvcore_precise_bn_leaves_the_ranks_with_different_buffers(tmp_path):
    """The bug the all-reduce fixes, shown on the same batches: each rank keeps its own statistics."""
    ranks = _run_two_ranks(tmp_path, "fvcore")
    assert ranks[0]["digest"] != ranks[1]["digest"]
    assert not torch.allclose(ranks[0]["state"]["1.running_mean"], ranks[1]["state"]["1.running_mean"])


def test_one_process_is_the_references_estimator_not_todays_and_momentum_is_restored():
    from fvcore.nn.precise_bn import update_bn_stats as todays_fvcore

    ours = _model().train()
    assert update_bn_stats(ours, iter(_batches(1)), 3) == 2
    _assert_buffers(ours.state_dict(), _fvcore_96ee7f1(_model().train(), _batches(1)))
    todays = _model().train()
    todays_fvcore(todays, iter(_batches(1)), 3)
    assert not torch.allclose(ours.state_dict()["1.running_var"], todays.state_dict()["1.running_var"], rtol=1e-3)
    assert all(m.momentum == 0.1 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    # layers in eval mode are left alone, and too few batches is an error, not a silent estimate
    frozen = _model().eval()
    assert update_bn_stats(frozen, iter(_batches(0)), 3) == 0
    with pytest.raises(ValueError, match="needs 3 batches; the data ended after 2"):
        update_bn_stats(_model().train(), iter(_batches(0, iterations=2)), 3)
