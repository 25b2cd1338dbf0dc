"""LOOK's memory search in two Triton kernels: the (batch x slots) similarity matrix is never written.

The same two-stage exact top-k as `KNNMemory._chunk_topk_keys`, with the similarities kept on chip:
1. `_group_maxima_kernel` multiplies a block of queries by the memory, GROUP slots at a time (bfloat16
   inputs, float32 sums; on a GPU on its tensor cores), and writes only each group's maximum, as an
   `ordered_keys` key (the maximum's bits, then the group reversed): [batch, slots / GROUP].
2. torch picks each query's top-`wanted` groups by those keys: the groups holding its top-`wanted` slots are
   among them (each such group holds a distinct slot at or above the wanted-th).
3. `_candidates_kernel` multiplies each query's block by each chosen group again, with the same tile shapes
   and the same code as stage 1, so it gets the same float32 sums bit for bit, and writes that query's keys.
4. torch takes the top-`wanted` of those wanted x GROUP keys (ties to the lower slot).
`KNNMemory.search` then leaves the own slot out: the same contract as the torch search (the exact top-k of
the kernel's own similarities, own slot left out, no host sync), other similarities only in the order of
the float32 sums.

Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on a CPU for the tests; it cannot multiply
bfloat16 tiles, so there the rows travel as int16 bit patterns, are widened to the same values in float32
and multiplied in float32 (the same products; the sums in another order).
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
BLOCK_Q = 64  # queries per tile: one warpgroup's matrix multiply on an H100 / H200
GROUP = 128  # memory slots per tile, and per group of the two-stage top-k


def available(device: torch.device, dim: int = 128) -> bool:
    """Whether the fused search can run for `dim`-wide tensors on `device`: Triton, and a GPU with bfloat16
    tensor cores (compute capability 8.0+), or Triton's CPU interpreter; `dim` a power of two, 16 or more
    (one tile's width)."""
    if triton is None or dim < 16 or dim & (dim - 1):
        return False
    if INTERPRETED:
        return device.type == "cpu"
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


if triton is not None:

    @triton.jit
    def _load_rows(rows_ptr, first, count, DIM: tl.constexpr, ROWS: tl.constexpr, BF16: tl.constexpr):
        """Rows first .. first + ROWS - 1 (zeros past `count`): bfloat16, or their int16 bits widened to
        float32 where the interpreter cannot multiply bfloat16."""
        rows = first + tl.arange(0, ROWS)
        offsets = rows[:, None].to(tl.int64) * DIM + tl.arange(0, DIM)[None, :]
        tile = tl.load(rows_ptr + offsets, mask=rows[:, None] < count, other=0)
        if not BF16:
            tile = ((tile.to(tl.int32) & 0xFFFF) << 16).to(tl.float32, bitcast=True)
        return tile

    @triton.jit
    def _group_similarities(q, memory, group, slots, DIM: tl.constexpr, GROUP: tl.constexpr, BF16: tl.constexpr):
        """q @ memory[group's slots].T in float32, -inf past the last slot. Both stages call this with the
        same shapes: the same sums, bit for bit."""
        cols = group * GROUP + tl.arange(0, GROUP)
        m = tl.load(memory + cols[:, None].to(tl.int64) * DIM + tl.arange(0, DIM)[None, :],
                    mask=cols[:, None] < slots, other=0)
        if not BF16:  # (inline, not _load_rows: the interpreter pays ~1 ms a nested call)
            m = ((m.to(tl.int32) & 0xFFFF) << 16).to(tl.float32, bitcast=True)
        sims = tl.dot(q, tl.trans(m), out_dtype=tl.float32) + 0.0  # + 0.0: -0.0 keys as +0.0
        return tl.where(cols[None, :] < slots, sims, float("-inf"))

    @triton.jit
    def _ordered_key(values, index):
        """`ordered_keys`: the float's bits in integer order, then the index reversed."""
        bits = values.to(tl.int32, bitcast=True)
        ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
        return (ordered << 32) + (4294967295 - index)

    def _maxima_configs() -> list:
        if INTERPRETED:  # the interpreter would run every configuration
            return [triton.Config({"PER_PROGRAM": 16})]
        # four warps, as stage 2: one warpgroup's product for a 64-row tile in both stages
        return [triton.Config({"PER_PROGRAM": per}, num_warps=4, num_stages=stages)
                for per in (8, 32) for stages in (3, 4)]

    # which groups a program walks and how is a launch choice: every configuration writes the same keys
    @triton.autotune(configs=_maxima_configs(), key=["batch", "slots", "DIM"])
    @triton.jit
    def _group_maxima_kernel(queries, memory, group_keys, sims_out, batch, slots, groups,
                             DIM: tl.constexpr, BLOCK_Q: tl.constexpr, GROUP: tl.constexpr, BF16: tl.constexpr,
                             WRITE_SIMS: tl.constexpr, PER_PROGRAM: tl.constexpr):
        block, part = tl.program_id(0), tl.program_id(1)
        rows = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q = _load_rows(queries, block * BLOCK_Q, batch, DIM, BLOCK_Q, BF16)
        first = part * PER_PROGRAM
        for group in range(first, tl.minimum(first + PER_PROGRAM, groups)):
            sims = _group_similarities(q, memory, group, slots, DIM, GROUP, BF16)
            if WRITE_SIMS:
                cols = group * GROUP + tl.arange(0, GROUP)
                tl.store(sims_out + rows[:, None].to(tl.int64) * slots + cols[None, :], sims,
                         mask=(rows[:, None] < batch) & (cols[None, :] < slots))
            # keys of the maxima only: a key for every similarity would cost more than the product
            index = tl.zeros([BLOCK_Q], dtype=tl.int64) + group
            tl.store(group_keys + rows.to(tl.int64) * groups + group, _ordered_key(tl.max(sims, axis=1), index),
                     mask=rows < batch)

    @triton.jit
    def _candidates_kernel(queries, memory, chosen_groups, keys_out, batch, slots, chosen, per_program,
                           DIM: tl.constexpr, BLOCK_Q: tl.constexpr, GROUP: tl.constexpr, BF16: tl.constexpr):
        query, part = tl.program_id(0), tl.program_id(1)
        block = query // BLOCK_Q
        rows = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
        q = _load_rows(queries, block * BLOCK_Q, batch, DIM, BLOCK_Q, BF16)  # the whole block, as in stage 1
        first = part * per_program
        for rank in range(first, tl.minimum(first + per_program, chosen)):
            group = tl.load(chosen_groups + query.to(tl.int64) * chosen + rank)
            sims = _group_similarities(q, memory, group, slots, DIM, GROUP, BF16)
            mine = tl.max(tl.where(rows[:, None] == query, sims, float("-inf")), axis=0)  # this query's row
            cols = group * GROUP + tl.arange(0, GROUP)
            offsets = (query.to(tl.int64) * chosen + rank) * GROUP + tl.arange(0, GROUP)
            tl.store(keys_out + offsets, _ordered_key(mine, cols.to(tl.int64)))


def fused_topk_keys(queries: torch.Tensor, memory: torch.Tensor, wanted: int,
                    sims_out: torch.Tensor | None = None) -> torch.Tensor:
    """`ordered_keys` of each query's top `wanted` memory slots, sorted (similarity desc, slot asc): [batch,
    wanted]. `queries` [batch, dim] and `memory` [slots, dim] are bfloat16; `sims_out` ([batch, slots]
    float32), if given, receives every similarity stage 1 computed (for tests)."""
    batch, dim = queries.shape
    slots = memory.shape[0]
    groups = triton.cdiv(slots, GROUP)
    queries, memory = queries.contiguous(), memory.contiguous()
    if INTERPRETED:
        queries, memory = queries.view(torch.int16), memory.view(torch.int16)
    shapes = {"DIM": dim, "BLOCK_Q": BLOCK_Q, "GROUP": GROUP, "BF16": not INTERPRETED}
    group_keys = torch.empty(batch, groups, dtype=torch.int64, device=queries.device)
    blocks = triton.cdiv(batch, BLOCK_Q)
    _group_maxima_kernel[lambda meta: (blocks, triton.cdiv(groups, meta["PER_PROGRAM"]))](
        queries, memory, group_keys, sims_out if sims_out is not None else group_keys, batch, slots, groups,
        WRITE_SIMS=sims_out is not None, **shapes)
    chosen = min(wanted, groups)
    chosen_groups = group_keys.topk(chosen, dim=1).indices  # keys are unique: the index is the group
    keys = torch.empty(batch, chosen * GROUP, dtype=torch.int64, device=queries.device)
    # a GPU runs one group a program (many programs in parallel); the interpreter pays for every program
    per_program = chosen if INTERPRETED else 1
    _candidates_kernel[(batch, triton.cdiv(chosen, per_program))](
        queries, memory, chosen_groups, keys, batch, slots, chosen, per_program, **shapes)
    return keys.topk(wanted, dim=1).values
