"""The LOOK memory: one L2-normalised embedding slot per training image, searched in chunks.

Scale: ImageNet has 1.28M slots. The search never materialises the full (batch x slots) similarity
matrix: it walks the memory in chunks of `chunk_size` slots, keeps each chunk's top-k and merges, so
extra memory is O(batch x chunk_size). Ties are broken towards the lower slot index, so the neighbour
set (and hence the loss) is a well-defined function of the data, whatever the chunking; this is done
with integer keys on the device, so a search never waits for the host.

`search_dtype=torch.bfloat16` (opt-in) searches a bfloat16 copy of the memory with bfloat16 queries, the
products summed in float32 (on a GPU, on its tensor cores: a float32 search over 1.28M slots is at least
84 GFLOP a step, about 1.3 ms at an H200's float32 peak). The neighbours are then the exact top-k of those
similarities; the memory itself, its updates and the loss stay float32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F

_LOW32 = (1 << 32) - 1
_LEFT_OUT = torch.iinfo(torch.int64).min  # below every key (keys of NaN aside): a slot left out of a top-k
GROUP = 128  # slots per group in the two-stage top-k of a chunk (fastest of 32-256 on an H200)


def ordered_keys(values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """One int64 per (float32 value, slot) that sorts by value, then by slot index ascending.

    The high 32 bits are the float's bits mapped to an integer of the same order, the low 32 bits the
    slot index reversed. Keys are unique, so `topk` on them has no ties: the neighbour set is exact and
    independent of chunking, and is found on the device without a host sync.
    """
    return _pack(values, _LOW32 - slots)


def _pack(values: torch.Tensor, reversed_slots: torch.Tensor) -> torch.Tensor:
    """`ordered_keys` given the low halves (`_LOW32 - slot`) already."""
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0, equal as floats
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    return torch.add(reversed_slots, ordered, alpha=1 << 32)  # (ordered << 32) | low, in one operation


def key_values(keys: torch.Tensor) -> torch.Tensor:
    """The float32 values that `ordered_keys` packed."""
    ordered = (keys >> 32).int()
    return torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF).view(torch.float32)


def key_slots(keys: torch.Tensor) -> torch.Tensor:
    return _LOW32 - (keys & _LOW32)


class KNNMemory:
    """Embedding slots with labels; identical on every DDP rank (updated from the gathered batch)."""

    def __init__(
        self,
        labels: torch.Tensor,
        dim: int,
        momentum: float,
        chunk_size: int = 65536,
        seed: int = 0,
        search_dtype: torch.dtype = torch.float32,
        fused: bool = False,
    ):
        if search_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"search dtype must be float32 or bfloat16, not {search_dtype}")
        if fused and search_dtype != torch.bfloat16:
            raise ValueError("the fused search is a bfloat16 search: set method.search_dtype=bfloat16 with it")
        self.search_dtype = search_dtype
        self.fused = fused
        generator = torch.Generator().manual_seed(seed)
        # Random unit vectors until a slot is first written (same seed on every rank).
        self.embeddings = F.normalize(torch.randn(len(labels), dim, generator=generator), dim=1)
        self.labels = labels.clone().long()
        self.visited = torch.zeros(len(labels), dtype=torch.bool)
        self.momentum = momentum
        self.chunk_size = chunk_size
        self._reversed: dict = {}

    @property
    def embeddings(self) -> torch.Tensor:
        return self._embeddings

    @embeddings.setter
    def embeddings(self, value: torch.Tensor) -> None:
        # The searched copy follows every assignment; `update` writes the rows of both.
        self._embeddings = value
        self._searched = value if self.search_dtype == torch.float32 else value.to(self.search_dtype)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def to(self, device: torch.device) -> KNNMemory:
        self.embeddings = self.embeddings.to(device)
        self.labels = self.labels.to(device)
        self._reversed_indices(self.embeddings.device)
        self.visited = self.visited.to(device)
        return self

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar slots for each query, leaving out slot `exclude[i]` for query i.

        Returns (similarities, slot indices), each [batch, k], sorted by similarity (desc, index asc).
        The chunks are searched for the top k + 1 with every slot in; the query's own slot is dropped from
        those at the end (or, if it is not among them, the last one): the k best of the others, exactly,
        with no per-chunk work for the leaving out (each operation is a kernel launch on a GPU).
        """
        queries = queries.to(self.search_dtype)
        k = min(k, len(self) - 1)
        wanted = k + 1
        keys = None
        if self.fused:
            from pretrain.methods.fused_search import available, fused_topk_keys  # Triton: only when asked for

            if available(queries.device, queries.shape[1]):
                keys = fused_topk_keys(queries, self._searched, wanted)
        if keys is None:
            keys = self._topk_keys(queries, wanted)
        own = key_slots(keys) == exclude[:, None]
        keys = keys.masked_fill(own, _LEFT_OUT).topk(k, dim=1).values  # sorted: similarity desc, slot asc
        return key_values(keys), key_slots(keys)

    def _topk_keys(self, queries: torch.Tensor, wanted: int) -> torch.Tensor:
        """Keys of each query's top `wanted` slots, chunk by chunk, sorted."""
        constants = self._reversed_indices(queries.device)
        candidates = [self._chunk_topk_keys(self._chunk_similarities(queries, start), start, wanted, *constants)
                      for start in range(0, len(self), self.chunk_size)]
        # one chunk's keys are already its sorted top-k + 1
        return candidates[0] if len(candidates) == 1 else torch.cat(candidates, 1).topk(wanted, dim=1).values

    def _reversed_indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The low key halves of group indices 0, 1, ... and of offsets 0 .. GROUP - 1: made once per chunk
        size and device, outside any compiled graph (`to` makes them; inductor, given them to compute, narrows
        the arange to int32 and cannot compile a constant of 2^32 - 1 for a GPU)."""
        groups = -(-min(self.chunk_size, len(self)) // GROUP)
        key = (device, groups)
        if key not in self._reversed:
            self._reversed = {key: (_LOW32 - torch.arange(groups, device=device),
                                    _LOW32 - torch.arange(GROUP, device=device))}
        return self._reversed[key]

    def _chunk_topk_keys(self, sims: torch.Tensor, start: int, k: int, reversed_groups: torch.Tensor,
                         reversed_offsets: torch.Tensor) -> torch.Tensor:
        """Keys of the exact top-k of one chunk, found through the maxima of groups of `GROUP` slots.

        The groups holding the top-k are among the k groups with the highest (max, group index asc):
        each such group holds a distinct element at or above the k-th. So only k x GROUP candidates
        need keys and a top-k, instead of the whole chunk (a top-k over 65k columns is slow on a GPU).
        `reversed_groups` / `reversed_offsets`: the low halves of the keys of group indices 0, 1, ... and
        of slot offsets 0 .. GROUP - 1 in a group, made once per search.
        """
        batch, size = sims.shape
        k = min(k, size)
        groups = -(-size // GROUP)
        if groups * GROUP != size:  # pad with -inf slots beyond the chunk: never chosen, k <= size
            sims = F.pad(sims, (0, groups * GROUP - size), value=float("-inf"))
        grouped = sims.view(batch, groups, GROUP)
        group_keys = _pack(grouped.amax(2), reversed_groups[:groups])
        top_groups = group_keys.topk(min(k, groups), dim=1).indices  # keys are unique: index = group
        values = grouped.gather(1, top_groups[:, :, None].expand(-1, -1, GROUP)).flatten(1)
        # low halves of the slots start + group * GROUP + offset
        low = torch.sub(reversed_offsets - start, top_groups[:, :, None], alpha=GROUP).flatten(1)
        return _pack(values, low).topk(k, dim=1).values

    def _chunk_similarities(self, queries: torch.Tensor, start: int) -> torch.Tensor:
        """queries @ chunk.T in float32."""
        chunk = self._searched[start : start + self.chunk_size]
        if chunk.dtype == torch.float32:
            return queries @ chunk.T
        if chunk.is_cuda:  # bfloat16 products summed in float32 on the tensor cores
            return torch.mm(queries, chunk.T, out_dtype=torch.float32)
        return queries.float() @ chunk.float().T  # the same sums on a CPU, which has no bf16 x bf16 -> f32 product

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """m <- normalise(momentum * m + (1 - momentum) * z); a slot's first write takes z as is."""
        embeddings = F.normalize(embeddings.to(self.embeddings.dtype), dim=1)
        old = self.embeddings[indices]
        first = ~self.visited[indices]
        mixed = F.normalize(self.momentum * old + (1 - self.momentum) * embeddings, dim=1)
        self.embeddings[indices] = torch.where(first[:, None], embeddings, mixed)
        if self._searched is not self.embeddings:
            self._searched[indices] = self.embeddings[indices].to(self.search_dtype)
        self.visited.index_fill_(0, indices, True)  # `visited[indices] = True` copies True to the GPU: a host sync

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
        """A cheap fingerprint of the contents (float64 sum of values weighted by slot position).

        Chunk by chunk: a float64 copy of a 1.28M-slot memory at once would be 1.3 GB on every rank.
        """
        total = self.visited.sum().double()
        for start in range(0, len(self), self.chunk_size):
            chunk = self.embeddings[start : start + self.chunk_size].double().sum(1)
            weights = torch.arange(start + 1, start + len(chunk) + 1, device=chunk.device, dtype=torch.float64)
            total = total + (chunk * weights).sum()
        return total

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
