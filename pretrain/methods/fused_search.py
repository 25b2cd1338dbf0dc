"""LOOK's memory search as one Triton kernel: the similarity matrix is never written.

Each program takes a block of queries and a stretch of the memory, multiplies them tile by tile (bfloat16
inputs, float32 sums; on a GPU on its tensor cores) and merges every tile into a running top-KP of
`ordered_keys` (the similarity's bits, then the slot reversed: unique keys, ties to the lower slot). A tile
that beats no row's current KP-th key is skipped. Each stretch's top-KP goes back to torch, which merges the
stretches and leaves the own slot out exactly as `KNNMemory.search` does: the same contract (the exact
top-k of the kernel's own similarities, own slot left out, no host sync), other similarities only in the
order of the float32 sums. (`KNNMemory.search` calls it and does that last step.)

Triton's interpreter (TRITON_INTERPRET=1) runs the kernel on a CPU for the tests; it cannot multiply
bfloat16 tiles, so there the exact bfloat16 values are multiplied in float32 (the same products; the
sums in another order). The inputs travel as int16 bit patterns and are widened in the kernel, so both
modes load the same way.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch search runs instead
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_Q = 64  # queries per program
STRETCHES = 128  # memory stretches searched in parallel for each block of queries


def available(device: torch.device) -> bool:
    """Whether the fused search can run for tensors on `device`: Triton, and a GPU with bfloat16 tensor
    cores (compute capability 8.0+), or Triton's CPU interpreter."""
    if triton is None:
        return False
    if INTERPRETED:
        return device.type == "cpu"
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


if triton is not None:

    @triton.jit
    def _widen(bits):
        """bfloat16 bit patterns (int16) -> the same values as float32."""
        return ((bits.to(tl.int32) & 0xFFFF) << 16).to(tl.float32, bitcast=True)

    @triton.jit
    def _compare_swap(x, ROWS: tl.constexpr, N: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):
        """One bitonic step: each pair (i, i + D) ordered, descending where i // BLOCK is even."""
        a, b = tl.split(tl.permute(tl.reshape(x, (ROWS, N // (2 * D), 2, D)), (0, 1, 3, 2)))
        first = tl.arange(0, N // (2 * D))[:, None] * (2 * D) + tl.arange(0, D)[None, :]
        descending = ((first // BLOCK) % 2 == 0)[None, :, :]
        high, low = tl.maximum(a, b), tl.minimum(a, b)
        pairs = tl.join(tl.where(descending, high, low), tl.where(descending, low, high))
        return tl.reshape(tl.permute(pairs, (0, 1, 3, 2)), (ROWS, N))

    @triton.jit
    def _sort_descending(x, ROWS: tl.constexpr, N: tl.constexpr, LOG_N: tl.constexpr):
        """A bitonic sort of each row. (`tl.sort` does the same, but Triton's interpreter runs its
        reductions element by element: minutes where this takes milliseconds.)"""
        for stage in tl.static_range(1, LOG_N + 1):
            for step in tl.static_range(stage):
                x = _compare_swap(x, ROWS, N, 1 << (stage - 1 - step), 1 << stage)
        return x

    @triton.jit
    def _search_kernel(queries, memory, out, sims_out, batch, slots, per_stretch,
                       DIM: tl.constexpr, BLOCK_Q: tl.constexpr, KP: tl.constexpr, LOG_2KP: tl.constexpr,
                       BF16_DOT: tl.constexpr, WRITE_SIMS: tl.constexpr):
        block, stretch = tl.program_id(0), tl.program_id(1)
        rows = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
        dims = tl.arange(0, DIM)
        q = _widen(tl.load(queries + rows[:, None] * DIM + dims[None, :], mask=rows[:, None] < batch, other=0))
        if BF16_DOT:
            q = q.to(tl.bfloat16)  # exact: the values are bfloat16 already
        best = tl.full((BLOCK_Q, KP), -9223372036854775808, tl.int64)
        first = stretch * per_stretch
        last = tl.minimum(first + per_stretch, slots)
        for start in range(first, last, KP):
            cols = start + tl.arange(0, KP)
            inside = cols < last
            m = _widen(tl.load(memory + cols[:, None] * DIM + dims[None, :], mask=inside[:, None], other=0))
            if BF16_DOT:
                m = m.to(tl.bfloat16)
            sims = tl.dot(q, tl.trans(m), out_dtype=tl.float32) + 0.0  # + 0.0: -0.0 keys as +0.0
            if WRITE_SIMS:
                tl.store(sims_out + rows[:, None].to(tl.int64) * slots + cols[None, :], sims,
                         mask=(rows[:, None] < batch) & inside[None, :])
            bits = sims.to(tl.int32, bitcast=True)
            ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
            keys = (ordered << 32) + (4294967295 - cols[None, :].to(tl.int64))
            keys = tl.where(inside[None, :], keys, -9223372036854775808)
            beats = tl.max(keys, axis=1) > tl.min(best, axis=1)
            if tl.sum(beats.to(tl.int32), axis=0) > 0:  # merge: the top KP of the running best and the tile
                both = _sort_descending(tl.reshape(tl.join(best, keys), (BLOCK_Q, 2 * KP)), BLOCK_Q, 2 * KP, LOG_2KP)
                best, _ = tl.split(tl.permute(tl.reshape(both, (BLOCK_Q, 2, KP)), (0, 2, 1)))
        offsets = (stretch * batch + rows[:, None]).to(tl.int64) * KP + tl.arange(0, KP)[None, :]
        tl.store(out + offsets, best, mask=rows[:, None] < batch)


def fused_topk_keys(queries: torch.Tensor, memory: torch.Tensor, wanted: int,
                    sims_out: torch.Tensor | None = None) -> torch.Tensor:
    """`ordered_keys` of each query's top `wanted` memory slots, sorted (similarity desc, slot asc): [batch,
    wanted]. `queries` [batch, dim] and `memory` [slots, dim] are bfloat16; `sims_out` ([batch, slots]
    float32), if given, receives every similarity the kernel computed (for tests)."""
    batch, dim = queries.shape
    slots = memory.shape[0]
    width = max(16, triton.next_power_of_2(wanted))  # tile width = running top size (tl.dot needs 16+)
    stretches = max(1, min(STRETCHES, triton.cdiv(slots, width * 4)))
    per_stretch = triton.cdiv(triton.cdiv(slots, stretches), width) * width
    stretches = triton.cdiv(slots, per_stretch)
    out = torch.empty(stretches, batch, width, dtype=torch.int64, device=queries.device)
    grid = (triton.cdiv(batch, BLOCK_Q), stretches)
    _search_kernel[grid](queries.contiguous().view(torch.int16), memory.contiguous().view(torch.int16), out,
                         sims_out if sims_out is not None else out, batch, slots, per_stretch,
                         DIM=dim, BLOCK_Q=BLOCK_Q, KP=width, LOG_2KP=(2 * width).bit_length() - 1,
                         BF16_DOT=not INTERPRETED, WRITE_SIMS=sims_out is not None)
    return out.permute(1, 0, 2).reshape(batch, -1).topk(wanted, dim=1).values
