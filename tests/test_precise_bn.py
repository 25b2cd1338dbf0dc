"""Precise BN leaves the same BatchNorm buffers on every rank (fvcore's per-rank version does not)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from benchmarks.frameworks.precise_bn import buffer_digest, update_bn_stats


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))


def _batches(rank: int, iterations: int = 3) -> list[torch.Tensor]:
    """What a multi-scale loader hands each rank: other images, other sizes (so other N x H x W)."""
    generator = torch.Generator().manual_seed(10 + rank)
    sizes = [(2, 9), (1, 12), (3, 7)] if rank == 0 else [(2, 14), (2, 8), (1, 10)]
    return [torch.randn(n, 3, s, s, generator=generator) * (1 + rank) + rank
            for n, s in sizes[:iterations]]


def _precise_bn_worker(rank: int, world: int, init_file: str, out: str, which: str) -> None:
    import torch.distributed as dist
    from fvcore.nn.precise_bn import update_bn_stats as fvcore_update_bn_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = _model().train()
    if which == "ours":
        update_bn_stats(model, iter(_batches(rank)), 3)
    else:
        fvcore_update_bn_stats(model, iter(_batches(rank)), 3)
    torch.save({"state": model.state_dict(), "digest": buffer_digest(model)}, f"{out}/{which}-{rank}.pt")
    dist.destroy_process_group()


def _run_two_ranks(tmp_path, which: str) -> list[dict]:
    mp.start_processes(_precise_bn_worker, args=(2, str(tmp_path / f"init-{which}"), str(tmp_path), which),
                       nprocs=2, start_method="spawn")
    return [torch.load(tmp_path / f"{which}-{rank}.pt") for rank in (0, 1)]


def test_precise_bn_gives_every_rank_the_statistics_of_all_ranks_batches(tmp_path):
    ranks = _run_two_ranks(tmp_path, "ours")
    assert ranks[0]["digest"] == ranks[1]["digest"]
    for key in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
    # ... and they are fvcore's population statistics of the six batches in one process
    from fvcore.nn.precise_bn import update_bn_stats as fvcore_update_bn_stats

    single = _model().train()
    fvcore_update_bn_stats(single, iter(_batches(0) + _batches(1)), 6)
    for key, value in single.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)
    # the weights were not touched, and the statistics moved away from their initial values
    initial = _model().state_dict()
    assert torch.equal(ranks[0]["state"]["0.weight"], initial["0.weight"])
    assert not torch.allclose(ranks[0]["state"]["4.running_var"], initial["4.running_var"])


def test_fvcore_precise_bn_leaves_the_ranks_with_different_buffers(tmp_path):
    """The bug the module fixes, shown on the same batches: each rank keeps its own statistics."""
    ranks = _run_two_ranks(tmp_path, "fvcore")
    assert ranks[0]["digest"] != ranks[1]["digest"]
    assert not torch.allclose(ranks[0]["state"]["1.running_mean"], ranks[1]["state"]["1.running_mean"])


def test_one_process_is_fvcores_estimator_and_momentum_is_restored():
    from fvcore.nn.precise_bn import update_bn_stats as fvcore_update_bn_stats

    ours, theirs = _model().train(), _model().train()
    assert update_bn_stats(ours, iter(_batches(1)), 3) == 2
    fvcore_update_bn_stats(theirs, iter(_batches(1)), 3)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert all(m.momentum == 0.1 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    # layers in eval mode are left alone, and too few batches is an error, not a silent estimate
    frozen = _model().eval()
    assert update_bn_stats(frozen, iter(_batches(0)), 3) == 0
    with pytest.raises(ValueError, match="needs 3 batches; the data ended after 2"):
        update_bn_stats(_model().train(), iter(_batches(0, iterations=2)), 3)
