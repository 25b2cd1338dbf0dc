"""Atomic file writes, the one way every stage writes a file that someone may be reading or may need later.

The rule: write a temporary file in the same folder (so the rename stays on one filesystem), flush and
fsync it, then `os.replace` it onto the final name. A reader, or a run killed at any instant, sees the
old file or the new one, never half of one; the temporary file is removed if anything fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path`'s content to; renamed onto `path` when the block ends without error.

    The temporary name keeps the suffix, since some writers (matplotlib, torch, the frameworks' loaders)
    go by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def atomic_copy(source: str | Path, path: str | Path) -> None:
    import shutil

    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (a run still being written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
