"""Time LOOK's memory search (ImageNet-sized memory by default), optionally against another implementation.

Prints figures (never asserts them): time per search, and the operators it dispatches (about its kernel
launches on a GPU). With `--against FILE` (a knn_memory.py of another revision, e.g.
`git show REV:pretrain/methods/knn_memory.py > knn_old.py`), both search the same memory with the
same queries, interleaved, and the neighbours and similarities are compared.

With `--search-dtypes float32 bfloat16`, each chunk size is timed with both searches, and the bfloat16
neighbours are compared with the float32 ones (and, on a GPU, with the same bfloat16 search done as a
CPU does it, float32 products of the rounded vectors: the tensor cores' sums must find the same neighbours
up to the order of summation).

  python -m pretrain.timers.look_search_time [--batch 256] [--slots 1281167] [--chunk-sizes 65536 262144]
                                        [--search-dtypes float32 bfloat16]
                                        [--against knn_old.py --against-chunk-size 65536]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from torch.nn import functional as F

from pretrain.methods import fused_search
from pretrain.methods.knn_memory import KNNMemory
from pretrain.timers.step_time import dispatched_operations
from pretrain.trainer import pick_device


def timed(search, queries: torch.Tensor, k: int, exclude: torch.Tensor, reps: int) -> float:
    for _ in range(3):
        search(queries, k, exclude)
    if queries.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        search(queries, k, exclude)
    if queries.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / reps * 1000


def operations(search, queries: torch.Tensor, k: int, exclude: torch.Tensor) -> int:
    """Operators one search dispatches (views and allocations aside): on a GPU, about its kernel launches."""
    from torch.profiler import profile

    with profile() as prof:
        search(queries, k, exclude)
    return dispatched_operations(prof.events())


def overlap(slots: torch.Tensor, reference: torch.Tensor) -> str:
    """How many of the reference's neighbours a search found, and how often the nearest is the same."""
    shared = (slots[:, :, None] == reference[:, None, :]).any(2).float().mean().item()
    first = (slots[:, 0] == reference[:, 0]).float().mean().item()
    return f"{100 * shared:.2f} % of the k neighbours shared, nearest the same for {100 * first:.1f} % of queries"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--slots", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[65536, 262144])
    parser.add_argument("--search-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--against", help="another knn_memory.py to compare with")
    parser.add_argument("--against-chunk-size", type=int, default=65536)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    labels = torch.arange(args.slots) % 1000
    memory = KNNMemory(labels, args.dim, 0.5).to(device)
    queries = F.normalize(torch.randn(args.batch, args.dim, device=device), dim=1)
    exclude = torch.randint(0, args.slots, (args.batch,), device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {where}: batch {args.batch}, {args.slots:,} x {args.dim} slots, k {args.k}, mean of {args.reps}")
    found = {}
    for dtype in args.search_dtypes:
        searcher = KNNMemory(labels, args.dim, 0.5, search_dtype=getattr(torch, dtype)).to(device)
        searcher.embeddings = memory.embeddings
        for chunk in args.chunk_sizes:
            searcher.chunk_size = chunk
            found[dtype] = searcher.search(queries, args.k, exclude)
            print(f"this revision, {dtype} search, chunk {chunk:,}: "
                  f"{timed(searcher.search, queries, args.k, exclude, args.reps):.2f} ms, "
                  f"{operations(searcher.search, queries, args.k, exclude)} operations")
        if dtype == "bfloat16" and device.type == "cuda":
            emulated = KNNMemory(labels, args.dim, 0.5, chunk_size=args.chunk_sizes[-1]).to(device)
            emulated.embeddings = memory.embeddings.bfloat16().float()  # what a CPU computes
            _, slots = emulated.search(queries.bfloat16().float(), args.k, exclude)
            print(f"  same neighbours as float32 products of the rounded vectors: {overlap(slots, found[dtype][1])}")
    if "bfloat16" in args.search_dtypes and fused_search.available(device):
        fused = KNNMemory(labels, args.dim, 0.5, search_dtype=torch.bfloat16, fused=True).to(device)
        fused.embeddings = memory.embeddings
        values, slots = fused.search(queries, args.k, exclude)
        print(f"this revision, fused bfloat16 search (two Triton kernels): "
              f"{timed(fused.search, queries, args.k, exclude, args.reps):.2f} ms, "
              f"{operations(fused.search, queries, args.k, exclude)} operations; against the bfloat16 search: "
              f"{overlap(slots, found['bfloat16'][1])}")
    if {"float32", "bfloat16"} <= found.keys():
        print(f"bfloat16 against float32 neighbours: {overlap(found['bfloat16'][1], found['float32'][1])}")
    reference = found.get("float32")
    if args.against:
        spec = importlib.util.spec_from_file_location("other_knn_memory", args.against)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        other = module.KNNMemory(labels, args.dim, 0.5, chunk_size=args.against_chunk_size).to(device)
        other.embeddings = memory.embeddings.clone()
        values, slots = other.search(queries, args.k, exclude)
        same = reference is not None and torch.equal(slots, reference[1]) and torch.equal(values, reference[0])
        print(f"{args.against}, chunk {args.against_chunk_size:,}: "
              f"{timed(other.search, queries, args.k, exclude, args.reps):.2f} ms, "
              f"{operations(other.search, queries, args.k, exclude)} operations; same neighbours and "
              f"similarities as this revision: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
