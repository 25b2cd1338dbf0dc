"""What every chart of the suite shares: one colour per method, and how a figure is written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pretrain.files import atomic_path

# One colour per method in every chart of the suite; other methods get the rest of the palette by name.
METHOD_COLOURS = {"sl": "#3b75af", "sl-mlp": "#e07b39", "look": "#519e3e", "random": "#8d8d8d"}
_SPARE_COLOURS = ("#c53a32", "#8d69b8", "#84584e", "#d57dbf", "#bcbc35", "#42b4c4")


def method_colour(method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    index = int.from_bytes(hashlib.sha256(method.encode()).digest()[:4], "big") % len(_SPARE_COLOURS)
    return _SPARE_COLOURS[index]


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


