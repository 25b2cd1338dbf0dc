"""Python's cyclic garbage collector kept off the imported libraries, at a program's start and during a run.

A full collection scans every live object, and with torch, torchvision, timm and a detection framework
imported a process holds about 500,000 of them: 0.26 s a collection (2-core machine, 2026-11-27). While a
program imports them, Python runs one each time the objects that survived earlier ones grow by a quarter
(1.2 s of the 5.6 s it took to import the benchmarks and the OpenMMLab frameworks; 0.55 s of a pretraining
run's start); a smoke run in MMDetection or MMSegmentation runs about ten (two of them mmengine's own, in its
datasets).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def imports_without_collection() -> Iterator[None]:
    """For the block (a command's imports), no cyclic collection; after it, the collector as it was, with what
    the block left alive frozen (`gc.freeze`: modules, classes and functions live as long as the program, and
    later full collections need not scan them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def collector_skips_what_is_alive() -> Iterator[None]:
    """For the block (a run), what is alive at its start is kept out of the full collections' way (`gc.freeze`;
    a `gc.freeze()` inside adds what was made since); after it, every frozen object, also any frozen before,
    is handed back to the collector, so nothing is kept that would otherwise have been freed."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
