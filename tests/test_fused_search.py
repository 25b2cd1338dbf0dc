"""LOOK's fused search kernel (pretrain/methods/fused_search.py): checked on this CPU by Triton's
interpreter; where it cannot run, the torch search answers instead."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

from pretrain.errors import UserError
from pretrain.methods import fused_search
from pretrain.methods.knn_memory import KNNMemory
from pretrain.methods.look import LeaveOneOutKNN
from pretrain.models import build_backbone
from tests.background import background_command, background_result
from tests.conftest import run_cli


@background_command("interpreted_fused_search")
def _start_interpreted_fused_search(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                                    environ: dict[str, str]) -> Callable[[], subprocess.CompletedProcess]:
    """tests/fused_search_checks.py under Triton's CPU interpreter (a second thread doubles its CPU time and
    saves none)."""
    return lambda: run_cli("-m", "tests.fused_search_checks", environ=environ, env_extra={"TRITON_INTERPRET": "1"},
                           timeout=900)


interpreted_fused_search = background_result("interpreted_fused_search")


@pytest.mark.slow
def test_the_kernel_finds_the_exact_top_k_of_its_similarities_under_the_interpreter(interpreted_fused_search):
    """Random, ragged (40 queries, 3,001 slots, k 64), tied (k 20 and 1) and collapsed memories: the exact
    top-k of the kernel's own similarities by brute force, its own slot left out, and >= 99.9 % of the torch
    bfloat16 search's neighbours (tests/fused_search_checks.py)."""
    result = interpreted_fused_search
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("exact top-") == 5 and "all fused-search checks passed" in result.stdout


def test_where_the_kernel_cannot_run_the_torch_search_answers():
    assert not fused_search.available(torch.device("cpu"))  # compiled Triton needs a GPU here
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(3000, dtype=torch.long)
    memory = F.normalize(torch.randn(3000, 32, generator=generator), dim=1)
    queries = F.normalize(torch.randn(8, 32, generator=generator), dim=1)
    exclude = torch.arange(8)
    searches = []
    for fused in (True, False):
        knn = KNNMemory(labels, 32, 0.5, chunk_size=1024, search_dtype=torch.bfloat16, fused=fused)
        knn.embeddings = memory
        searches.append(knn.search(queries, 10, exclude))
    assert all(torch.equal(a, b) for a, b in zip(*searches, strict=True))


def test_the_fused_search_is_a_bfloat16_search():
    backbone, dim = build_backbone("resnet18")
    with pytest.raises(UserError, match="method.search_kernel=fused is a bfloat16 search"):
        LeaveOneOutKNN(backbone, dim, torch.zeros(10, dtype=torch.long),
                       LeaveOneOutKNN.Params(search_kernel="fused", hidden_dim=16, embed_dim=8))
