"""Starting a program: its libraries imported without Python's cyclic collector scanning them again and again.

While a program imports torch, torchvision, timm and a detection framework (~500,000 objects), Python runs a
full collection each time the objects that survived earlier ones grow by a quarter: every one of them scans
all that was imported so far. That was 1.2 s of the 5.6 s it took to import the benchmarks and the
OpenMMLab frameworks (2-core machine, 2026-11-27; 0.55 s of a pretraining run's start).
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
