"""Time LOOK's memory search (ImageNet-sized memory by default), optionally against another implementation.

Prints figures (never asserts them). With `--against FILE` (a knn_memory.py of another revision, e.g.
`git show REV:pretrain/methods/knn_memory.py > /tmp/knn_old.py`), both search the same memory with the
same queries, interleaved, and the neighbours and similarities are compared.

  python -m benchmarks.look_search_time [--batch 256] [--slots 1281167] [--chunk-sizes 65536 262144]
                                        [--against /tmp/knn_old.py --against-chunk-size 65536]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from torch.nn import functional as F

from pretrain.methods.knn_memory import KNNMemory
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--slots", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[65536, 262144])
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
    reference = None
    for chunk in args.chunk_sizes:
        memory.chunk_size = chunk
        reference = memory.search(queries, args.k, exclude)
        print(f"this revision, chunk {chunk:,}: {timed(memory.search, queries, args.k, exclude, args.reps):.2f} ms")
    if args.against:
        spec = importlib.util.spec_from_file_location("other_knn_memory", args.against)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        other = module.KNNMemory(labels, args.dim, 0.5, chunk_size=args.against_chunk_size).to(device)
        other.embeddings = memory.embeddings.clone()
        values, slots = other.search(queries, args.k, exclude)
        same = torch.equal(slots, reference[1]) and torch.equal(values, reference[0])
        print(f"{args.against}, chunk {args.against_chunk_size:,}: "
              f"{timed(other.search, queries, args.k, exclude, args.reps):.2f} ms; same neighbours and "
              f"similarities as this revision: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
