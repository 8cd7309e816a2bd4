"""Plots shared by the notebooks (matplotlib, Agg-safe, readable at a glance)."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .paths import figures_dir


def to_hwc(img: torch.Tensor, from_range=(0, 1)) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) array in [0, 1] for imshow."""
    lo, hi = from_range
    x = ((img.float() - lo) / (hi - lo)).clamp(0, 1)
    x = x.permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def show_pairs(rows: list[dict], title: str, cols: int = 4):
    """A grid of (generation | nearest training image) pairs; each row dict has ``gen`` ([0,1]), ``nn``
    ([-1,1]), ``caption`` and ``label`` (e.g. 'copy, d1/d2=0.05')."""
    n = len(rows)
    r = int(np.ceil(n / cols))
    fig, axes = plt.subplots(r, 2 * cols, figsize=(2.6 * cols, 1.75 * r + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        a, b = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        a.imshow(to_hwc(row["gen"]), interpolation="nearest")
        b.imshow(to_hwc(row["nn"], (-1, 1)), interpolation="nearest")
        a.set_title("\n".join(textwrap.wrap(row["caption"], 24)[:3]), fontsize=6.5)
        b.set_title(f"nearest train\n{row['label']}", fontsize=6.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, captions: list[str], title: str, cols: int = 8, from_range=(-1, 1)):
    n = len(images)
    r = int(np.ceil(n / cols))
    # room for four caption lines above each image, so titles never run into the row above
    fig, axes = plt.subplots(r, cols, figsize=(1.6 * cols, 2.2 * r + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols, i % cols]
        ax.imshow(to_hwc(images[i], from_range), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(captions[i], 24)[:4]), fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def bar_with_threshold(labels: list[str], values: list[float], title: str, ylabel: str,
                       thresholds: dict[str, float] | None = None):
    """Per-group rates as labelled bars (seaborn), with dashed reference lines."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 3.4))
    sns.barplot(x=list(labels), y=[v if np.isfinite(v) else 0.0 for v in values], hue=list(labels),
                palette="tab10", legend=False, ax=ax)
    for i, v in enumerate(values):
        ax.text(i, (v if np.isfinite(v) else 0) + 0.01, "n/a" if not np.isfinite(v) else f"{v:.0%}",
                ha="center", fontsize=8)
    for name, y in (thresholds or {}).items():
        ax.axhline(y, ls="--", lw=1, color="grey")
        ax.text(len(labels) - 0.5, y, name, fontsize=7, va="bottom", ha="right", color="grey")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    return fig


def histograms(samples: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str, bins: int = 30,
               figsize=(5, 3)):
    """Overlaid distributions (seaborn), one per named sample, on shared bins."""
    import seaborn as sns

    values = np.concatenate([np.asarray(v, float).ravel() for v in samples.values()])
    names = np.concatenate([[k] * np.asarray(v).size for k, v in samples.items()])
    fig, ax = plt.subplots(figsize=figsize)
    sns.histplot(x=values, hue=names, bins=bins, alpha=0.55, ax=ax, element="step")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def interval_plot(rows: list[dict], y: str, value: str, ci: str, hue: str, title: str, xlabel: str,
                  references: dict[str, float] | None = None, figsize=(6.5, 3.2), xlim=(None, 1.01)):
    """Point estimates with their 95 % intervals (precomputed, ``ci`` = [lo, hi]) as horizontal ranges, one row
    per ``y`` label, dodged by ``hue`` (seaborn palette); dashed reference lines from ``references``."""
    import seaborn as sns

    labels = list(dict.fromkeys(r[y] for r in rows))
    hues = list(dict.fromkeys(r[hue] for r in rows))
    colours = dict(zip(hues, sns.color_palette("tab10", len(hues))))
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.7 / max(len(hues), 1)
    for r in rows:
        pos = labels.index(r[y]) - 0.35 + width * (hues.index(r[hue]) + 0.5)
        lo, hi = r[ci]
        ax.errorbar(r[value], pos, xerr=[[r[value] - lo], [hi - r[value]]], fmt="o", ms=4, capsize=2,
                    color=colours[r[hue]], label=str(r[hue]))
    for name, x in (references or {}).items():
        ax.axvline(x, ls="--", lw=1, color="grey")
        ax.text(x, len(labels) - 0.45, name, fontsize=7, rotation=90, va="top", ha="right", color="grey")
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles))
    ax.legend(keep.values(), keep.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(*xlim)
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig


QUICK_MARK = "quick parameters: not results"


def save_figure(fig, notebook: str, name: str) -> Path:
    """Save a matplotlib figure as PNG without timestamps or software tags (reproducible bytes). Under
    ``MEMLIB_QUICK=1`` (``make reproduce QUICK=1``, ``make test``) the figure carries a visible quick-run mark."""
    out = figures_dir(notebook) / f"{name}.png"
    if os.environ.get("MEMLIB_QUICK") == "1":   # tiny parameters: say so on the picture itself
        fig.text(0.5, 0.5, QUICK_MARK, transform=fig.transFigure, ha="center", va="center", rotation=20,
                 fontsize=16, color="crimson", alpha=0.45, fontweight="bold", zorder=1000)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, out)
    return out
