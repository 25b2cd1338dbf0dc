"""The probe's figures beside its table: 2-D projections of the val features and per-class spectra."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.charts import method_colour, save_figure
from pretrain.files import read_json


def probe_figures(rows: pd.DataFrame, out: Path) -> list[str]:
    """2-D projections coloured by class and by sub-mode (one checkpoint per method), and the mean
    per-class eigenvalue spectra of every checkpoint side by side. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plotted = []
    for _, row in rows[rows["quoted_source"] == ""].iterrows():
        for run_dir in sorted(row["run_dirs"]):
            data = read_json(Path(run_dir) / "work" / "plot_data.json")
            if data is not None and row["seeds"]:
                plotted.append((row, data))
                break
    if not plotted:
        return []
    first_per_method = {}
    for row, data in plotted:
        first_per_method.setdefault(row["method"], (row, data))
    fig, axes = plt.subplots(len(first_per_method), 2, figsize=(8, 3.6 * len(first_per_method)), squeeze=False)
    for (method, (row, data)), (by_class, by_submode) in zip(first_per_method.items(), axes, strict=True):
        xy = np.asarray(data["projection"], dtype=float)
        by_class.scatter(xy[:, 0], xy[:, 1], c=data["labels"], cmap="tab10", s=6)
        by_class.set_title(f"{method} ({row['checkpoint'][-8:]}): colour = class", fontsize=8)
        if data["submodes"] is not None:
            by_submode.scatter(xy[:, 0], xy[:, 1], c=data["submodes"], cmap="tab20", s=6)
            by_submode.set_title(f"{method}: colour = sub-mode (fine label)", fontsize=8)
        for ax in (by_class, by_submode):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("val features, first two principal components", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "probe_projection.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {method: method_colour(method) for method in first_per_method}
    for row, data in plotted:
        shares = [v for v in data["spectrum"] if v > 1e-10]  # a class of n images has n - 1 non-zero values
        ax.semilogy(range(1, len(shares) + 1), shares, color=colours[row["method"]], alpha=0.8,
                    label=row["method"])
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys())
    ax.set_xlabel("eigenvalue index (per class, sorted)")
    ax.set_ylabel("share of the class's variance")
    ax.set_title("mean per-class eigenvalue spectrum of the val features", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "probe_spectra.png")
    return ["probe_projection.png", "probe_spectra.png"]
