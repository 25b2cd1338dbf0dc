"""The LOOK memory: one L2-normalised embedding slot per training image, searched in chunks.

Scale: ImageNet has 1.28M slots. The search never materialises the full (batch x slots) similarity
matrix: it walks the memory in chunks of `chunk_size` slots, keeps each chunk's top-k and merges, so
extra memory is O(batch x chunk_size). Ties are broken towards the lower slot index, so the neighbour
set (and hence the loss) is a well-defined function of the data, whatever the chunking.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F


def _chunk_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of each row, and whether ties at the k-th value make torch.topk's choice arbitrary.

    Returns (values, columns, ambiguous); `ambiguous` is a 0-d tensor, so no host sync happens here.
    """
    values, columns = sims.topk(k, dim=1)
    ambiguous = ((sims >= values[:, -1:]).sum(1) > k).any()
    return values, columns, ambiguous


def _exact_chunk_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row by (similarity desc, column asc): ties at the k-th value go to the lowest columns."""
    kth = sims.topk(k, dim=1).values[:, -1:]
    above = sims > kth
    tied = sims == kth
    need = k - above.sum(1, keepdim=True)
    take = above | (tied & (tied.cumsum(1) <= need))
    columns = take.nonzero()[:, 1].view(sims.shape[0], k)
    return sims.gather(1, columns), columns


def merge_topk(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of candidate (value, index) pairs by value desc, then index asc (stable sorts)."""
    order = indices.argsort(dim=1, stable=True)
    values, indices = values.gather(1, order), indices.gather(1, order)
    order = values.argsort(dim=1, descending=True, stable=True)[:, :k]
    return values.gather(1, order), indices.gather(1, order)


class KNNMemory:
    """Embedding slots with labels; identical on every DDP rank (updated from the gathered batch)."""

    def __init__(
        self,
        labels: torch.Tensor,
        dim: int,
        momentum: float,
        chunk_size: int = 65536,
        seed: int = 0,
    ):
        generator = torch.Generator().manual_seed(seed)
        # Random unit vectors until a slot is first written (same seed on every rank).
        self.embeddings = F.normalize(torch.randn(len(labels), dim, generator=generator), dim=1)
        self.labels = labels.clone().long()
        self.visited = torch.zeros(len(labels), dtype=torch.bool)
        self.momentum = momentum
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def to(self, device: torch.device) -> KNNMemory:
        self.embeddings = self.embeddings.to(device)
        self.labels = self.labels.to(device)
        self.visited = self.visited.to(device)
        return self

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar slots for each query, leaving out slot `exclude[i]` for query i.

        Returns (similarities, slot indices), each [batch, k], sorted by similarity (desc, index asc).
        """
        queries = queries.to(self.embeddings.dtype)
        k = min(k, len(self) - 1)
        candidates_v, candidates_i, ambiguous = [], [], []
        for start in range(0, len(self), self.chunk_size):
            sims = self._chunk_similarities(queries, start, exclude)
            values, columns, tie = _chunk_topk(sims, min(k, sims.shape[1]))
            candidates_v.append(values)
            candidates_i.append(columns + start)
            ambiguous.append(tie)
        # One host sync per search (not per chunk); the rare chunks with ties at the boundary are redone exactly.
        for chunk in torch.stack(ambiguous).nonzero().flatten().tolist():
            start = chunk * self.chunk_size
            sims = self._chunk_similarities(queries, start, exclude)
            values, columns = _exact_chunk_topk(sims, min(k, sims.shape[1]))
            candidates_v[chunk], candidates_i[chunk] = values, columns + start
        return merge_topk(torch.cat(candidates_v, 1), torch.cat(candidates_i, 1), k)

    def _chunk_similarities(self, queries: torch.Tensor, start: int, exclude: torch.Tensor) -> torch.Tensor:
        """queries @ chunk.T, with each query's own slot (if in this chunk) set to -inf."""
        chunk = self.embeddings[start : start + self.chunk_size]
        sims = queries @ chunk.T
        own = exclude - start
        inside = (own >= 0) & (own < len(chunk))
        column = own.clamp(0, len(chunk) - 1)[:, None]
        # scatter rather than boolean indexing: no host sync
        sims.scatter_(1, column, torch.where(inside[:, None], float("-inf"), sims.gather(1, column)))
        return sims

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """m <- normalise(momentum * m + (1 - momentum) * z); a slot's first write takes z as is."""
        embeddings = F.normalize(embeddings.to(self.embeddings.dtype), dim=1)
        old = self.embeddings[indices]
        first = ~self.visited[indices]
        mixed = F.normalize(self.momentum * old + (1 - self.momentum) * embeddings, dim=1)
        self.embeddings[indices] = torch.where(first[:, None], embeddings, mixed)
        self.visited[indices] = True

    @torch.no_grad()
    def update_from_all_ranks(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Apply the whole global batch on every rank, so that every rank's memory stays identical."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            all_indices = [torch.empty_like(indices) for _ in range(world)]
            all_embeddings = [torch.empty_like(embeddings) for _ in range(world)]
            dist.all_gather(all_indices, indices.contiguous())
            dist.all_gather(all_embeddings, embeddings.contiguous())
            indices, embeddings = torch.cat(all_indices), torch.cat(all_embeddings)
        self.update(indices, embeddings)

    @torch.no_grad()
    def checksum(self) -> torch.Tensor:
        """A cheap fingerprint of the contents (float64 sum of values weighted by slot position)."""
        weights = torch.arange(1, len(self) + 1, device=self.embeddings.device, dtype=torch.float64)
        return (self.embeddings.double().sum(1) * weights).sum() + self.visited.double().sum()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"embeddings": self.embeddings, "labels": self.labels, "visited": self.visited}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["embeddings"].shape != self.embeddings.shape:
            raise ValueError(
                f"memory shape {tuple(state['embeddings'].shape)} != {tuple(self.embeddings.shape)}"
            )
        device = self.embeddings.device
        self.embeddings = state["embeddings"].to(device, self.embeddings.dtype)
        self.labels = state["labels"].to(device)
        self.visited = state["visited"].to(device)
