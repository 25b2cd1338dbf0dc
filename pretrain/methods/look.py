"""LOOK (Feng et al., ICLR 2022): leave-one-out k-nearest-neighbour supervised pretraining.

Instead of a classifier, each image only has to share its label with most of its k nearest
neighbours in a memory of embeddings (its own slot left out), so a class may stay multi-modal:

    N_i   = k most similar memory slots to z_i, slot i excluded
    w_ij  = softmax_{j in N_i}(z_i . m_j / tau)
    p_i   = sum of w_ij over j in N_i with y_j = y_i
    loss  = -(1/B) sum_i log p_i

An image whose k neighbours all carry other labels has p_i = 0 whatever z_i is, so it gives no
gradient; it adds 0 to the sum (not -log 0) and is counted in the `no_pos` metric instead.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from pretrain.errors import UserError
from pretrain.methods.base import Method, mlp, register_method
from pretrain.methods.knn_memory import KNNMemory


def look_loss(
    queries: torch.Tensor,
    neighbours: torch.Tensor,
    neighbour_labels: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LOOK loss given each query's neighbour set.

    queries [B, D] (normalised, with grad), neighbours [B, k, D], neighbour_labels [B, k], labels [B].
    Returns (loss averaged over B, p [B], has_positive [B]).
    """
    logits = torch.einsum("bd,bkd->bk", queries, neighbours) / temperature
    positive = neighbour_labels == labels[:, None]
    has_positive = positive.any(1)
    # Rows without positives use all logits here so that nothing is -inf (whose gradient is NaN).
    positive_or_all = positive | ~has_positive[:, None]
    log_p = logits.masked_fill(~positive_or_all, float("-inf")).logsumexp(1) - logits.logsumexp(1)
    per_sample = torch.where(has_positive, -log_p, torch.zeros_like(log_p))
    p = torch.where(has_positive, log_p.exp(), torch.zeros_like(log_p))
    return per_sample.sum() / len(queries), p.detach(), has_positive


SEARCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@register_method("look")
class LeaveOneOutKNN(Method):
    """Backbone -> head -> embedding; leave-one-out kNN loss against a memory."""

    @dataclasses.dataclass
    class Params:
        k: int = 50
        temperature: float = 0.1
        momentum: float = 0.5  # memory update: m <- normalise(momentum * m + (1 - momentum) * z)
        embed_dim: int = 128
        hidden_dim: int = 2048
        chunk_size: int = 262144  # memory slots per similarity chunk: bounds search memory
        memory_seed: int = 0
        search_dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: faster on a GPU, rounded vectors
        # fused: the bfloat16 search in two Triton kernels (pretrain/methods/fused_search.py) where they can run
        # (a GPU with bfloat16 tensor cores); elsewhere, and for float32, the torch search
        search_kernel: Literal["torch", "fused"] = "torch"
        # compile: the search and the loss (with its backward) through torch.compile, so that a GPU runs a few
        # fused kernels instead of launching hundreds of small ones
        compile: bool = False
        # with compile: "reduce-overhead" replays the compiled part as CUDA graphs (one launch for its kernels;
        # on a CPU the same as "default")
        compile_mode: Literal["default", "reduce-overhead"] = "default"

    def __init__(self, backbone: nn.Module, feature_dim: int, targets: torch.Tensor, params: Params):
        super().__init__(backbone, feature_dim, targets, params)
        if params.k < 1:
            raise ValueError("method.k must be >= 1")
        if params.search_kernel == "fused" and params.search_dtype != "bfloat16":
            raise UserError("method.search_kernel=fused is a bfloat16 search: set method.search_dtype=bfloat16 too")
        self.head = mlp(feature_dim, params.hidden_dim, params.embed_dim)
        self.memory = KNNMemory(targets, params.embed_dim, params.momentum, params.chunk_size,
                                seed=params.memory_seed, search_dtype=SEARCH_DTYPES[params.search_dtype],
                                fused=params.search_kernel == "fused")
        self._compiled = None

    def to_device(self, device: torch.device) -> None:
        self.memory.to(device)

    def loss(self, outputs, labels, indices):
        graphs = self.params.compile and self.params.compile_mode == "reduce-overhead"
        if self._compiled is None:  # made on first use: a method built but never stepped compiles nothing
            self._compiled = torch.compile(self._neighbour_loss, dynamic=False, mode=self.params.compile_mode) \
                if self.params.compile else self._neighbour_loss
        if graphs:  # a new step: the graphs' outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        loss, queries, p, has_positive = self._compiled(outputs, labels, indices)
        if graphs:  # the loss outlives the step (logging); the graphs' own output is overwritten by the next replay
            loss = loss.clone()
        # outside the compiled part: the cross-rank gather, and in-place writes into the memory
        self.memory.update_from_all_ranks(indices, queries.detach())
        return loss, {"p_mean": p.mean(), "no_pos": (~has_positive).float().mean()}

    def _neighbour_loss(self, outputs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        queries = F.normalize(outputs.float(), dim=1)
        _, neighbour_idx = self.memory.search(queries.detach(), self.params.k, exclude=indices)
        neighbours = self.memory.embeddings[neighbour_idx]
        loss, p, has_positive = look_loss(
            queries, neighbours, self.memory.labels[neighbour_idx], labels, self.params.temperature
        )
        return loss, queries, p, has_positive

    # The memory travels inside the module's state_dict (as `_extra_state`), but is not a buffer:
    # DDP would broadcast a 1.28M-slot buffer from rank 0 on every forward.
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.memory.state_dict().items()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.memory.load_state_dict(state)

    def check_consistent_across_ranks(self) -> None:
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        checksum = self.memory.checksum().reshape(1)
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(f"LOOK memory differs between ranks (checksums {low.item()} .. {high.item()})")
