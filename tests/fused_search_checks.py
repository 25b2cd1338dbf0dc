"""Checks of the fused search under Triton's CPU interpreter; run by tests/test_fused_search.py in a process
started with TRITON_INTERPRET=1 (the interpreter is chosen when the kernel is defined). On a GPU (no
interpreter) the same checks run compiled on its tensor cores, and one more at ImageNet's size:

  python -m tests.fused_search_checks          # on a GPU machine
"""

from __future__ import annotations

import os
import time
from collections import Counter

import torch
from torch.nn import functional as F

from pretrain.methods import fused_search
from pretrain.methods.knn_memory import KNNMemory, key_slots, ordered_keys
from pretrain.process_exit import exit_now

LEFT_OUT = torch.iinfo(torch.int64).min


def searched(memory: torch.Tensor, queries: torch.Tensor, k: int, exclude: torch.Tensor) -> dict:
    """The fused search's neighbours, every similarity it computed, and the torch bfloat16 search's."""
    labels = torch.zeros(len(memory), dtype=torch.long, device=memory.device)
    fused = KNNMemory(labels, memory.shape[1], 0.5, search_dtype=torch.bfloat16, fused=True)
    fused.embeddings = memory
    sims = torch.full((len(queries), len(memory)), float("nan"), device=memory.device)
    original = fused_search.fused_topk_keys  # the search imports it when it searches: record its similarities
    fused_search.fused_topk_keys = lambda q, m, wanted: original(q, m, wanted, sims_out=sims)
    try:
        values, slots = fused.search(queries, k, exclude)
    finally:
        fused_search.fused_topk_keys = original
    plain = KNNMemory(labels, memory.shape[1], 0.5, search_dtype=torch.bfloat16, chunk_size=4096)
    plain.embeddings = memory
    _, torch_slots = plain.search(queries, k, exclude)
    return {"values": values, "slots": slots, "sims": sims, "torch_slots": torch_slots}


def checked(name: str, memory: torch.Tensor, queries: torch.Tensor, k: int, exclude: torch.Tensor,
          min_agreement: float = 0.999) -> None:
    started = time.perf_counter()
    found = searched(memory, queries, k, exclude)
    sims, slots = found["sims"], found["slots"]
    assert not sims.isnan().any(), f"{name}: the kernel left similarities uncomputed"
    # the exact top-k of its own similarities, ties to the lower slot, own slot left out (brute force)
    keys = ordered_keys(sims, torch.arange(len(memory), device=sims.device).expand_as(sims))
    keys[torch.arange(len(queries), device=sims.device), exclude] = LEFT_OUT
    assert torch.equal(slots, key_slots(keys.topk(k, dim=1).values)), f"{name}: not the exact top-k"
    assert torch.equal(found["values"], sims.gather(1, slots)), f"{name}: values are not its similarities"
    assert not (slots == exclude[:, None]).any(), f"{name}: the own slot was returned"
    # against the torch bfloat16 search: the same products, summed in another order. Compared by the neighbours'
    # vectors: where slots hold the same vector, rounding (not the slot) can order them (numpy's products in the
    # interpreter differ in the last bit between identical rows; torch's do not)
    _, vector_of = torch.unique(memory.to(torch.bfloat16).float(), dim=0, return_inverse=True)
    shared = sum(sum((Counter(vector_of[a].tolist()) & Counter(vector_of[b].tolist())).values())
                 for a, b in zip(slots, found["torch_slots"], strict=True))
    agreement = shared / slots.numel()
    assert agreement >= min_agreement, f"{name}: {agreement:.4%} of neighbours agree with the torch search"
    print(f"{name}: exact top-{k} of {len(queries)} x {len(memory)}, {agreement:.2%} as the torch bfloat16 "
          f"search, {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    device = torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")
    assert fused_search.available(device), f"the fused search cannot run on {device}"
    # a tile is a power of two of at least 16 wide: other embedding widths take the torch search
    assert not any(fused_search.available(device, dim) for dim in (8, 48, 96))
    generator = torch.Generator().manual_seed(0)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1).to(device)

    def check(name: str, memory: torch.Tensor, queries: torch.Tensor, k: int, exclude: torch.Tensor,
              min_agreement: float = 0.999) -> None:
        checked(name, memory.to(device), queries.to(device), k, exclude.to(device), min_agreement)

    memory = unit(8192, 128)
    queries = memory[torch.randint(0, 8192, (64,), generator=generator)] + 0.05 * unit(64, 128)
    exclude = torch.randint(0, 8192, (64,), generator=generator).to(device)
    exclude[:32] = torch.topk(F.normalize(queries[:32]) @ memory.T, 1).indices[:, 0]  # the own slot is the best
    # k 20: under the interpreter the second stage pays ~2 ms for each query's k + 1 chosen groups (k 50 here
    # took 7.8 of the 15 s); large k: the ragged check and, on a GPU, the ImageNet-sized one
    check("random", memory, F.normalize(queries), 20, exclude)
    # 40 queries (not a multiple of the kernel's block), 3,001 slots (not a multiple of a tile), k = 64
    check("k 64, ragged", memory[:3001], F.normalize(queries[:40]), 64, exclude[:40] % 3001)
    # ties: 16 distinct vectors, each in many slots; k = 1
    tied = unit(16, 128).repeat(128, 1)
    check("tied", tied, unit(64, 128), 20, torch.arange(64))
    check("tied, k 1", tied, unit(64, 128), 1, torch.arange(64))
    # collapsed: every slot the same vector, so every similarity ties: the lowest slots, own slot left out
    collapsed = unit(1, 128).expand(2048, 128).contiguous()
    check("collapsed", collapsed, unit(64, 128), 10, torch.arange(64))
    if device.type == "cuda":  # ImageNet's memory and a training batch; agreement printed, not held to 99.9 %
        # (1.28M random slots: many similarities tie in the torch search's bfloat16 products, not in float32 sums)
        memory = unit(1_281_167, 128)
        queries = F.normalize(memory[:256] + 0.3 * unit(256, 128))
        check("ImageNet-sized", memory, queries, 50, torch.arange(256), min_agreement=0.0)
    print("all fused-search checks passed")


if __name__ == "__main__":
    main()
    exit_now(0)  # without the teardown of torch and Triton
