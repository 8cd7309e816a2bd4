"""Notebook 05's figures (PRSS, Chen et al., CVPR 2025): each function draws one figure from ``run_study``'s
result (the notebook saves it under the same name, ``figures/05_prss/<name>.png``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..plotting import to_hwc


def plot_candidate_check(res):
    """Dev half: each group's first-step magnitude, of the prompt and of its best trigger-keeping and
    trigger-dropping rewrites, against the lambda sweep (``candidate_check``)."""
    pg = res.check["per_group"]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    kinds = [("original", "the prompt"), ("keep", "best rewrite keeping the trigger"),
             ("drop", "best rewrite dropping it")]
    for k, (kind, label) in enumerate(kinds):
        xs, med, lo, hi = [], [], [], []
        for j, (g, v) in enumerate(pg.items()):
            if v[kind].get("n"):
                xs.append(j + (k - 1) * 0.25), med.append(v[kind]["median"])
                lo.append(v[kind]["median"] - v[kind]["p10"]), hi.append(v[kind]["p90"] - v[kind]["median"])
        ax.errorbar(xs, med, yerr=[lo, hi], fmt="o", capsize=3, label=label)
    for lam in res.lambdas:
        ax.axhline(lam, color="grey", lw=0.5, ls=":")
    ax.set_xticks(range(len(pg)), list(pg))
    ax.set(ylabel="joint first-step magnitude",
           title="Dev half: median and 10-90 % range over prompts (dotted: lambda sweep)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_calibration(res, cfg):
    """The lambda sweep over the dev magnitudes, and PR's per-step thresholds against the memorized magnitude
    (``calibration``)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
    for g, mags in res.dev_magnitudes.items():
        axes[0].hist(mags, bins=20, alpha=0.5, label=f"{g} ({len(mags)})")
    for lam in res.lambdas:
        axes[0].axvline(lam, color="k", lw=0.7, ls=":")
    axes[0].set(xlabel="joint first-step magnitude (dev half)", ylabel="prompts", title="lambda sweep (dotted)")
    axes[0].legend(fontsize=7)
    steps = np.arange(cfg.num_steps)
    axes[1].plot(steps, np.broadcast_to(res.tau, steps.shape), "k--", label="tau_t")
    axes[1].plot(steps, np.broadcast_to(res.M, steps.shape), "k:", label="M_t")
    axes[1].plot(steps, res.steps["none"], color="tab:red", label="memorized test prompts, no mitigation (mean)")
    axes[1].set(xlabel="sampling step", ylabel="magnitude a_t (per image)", title="PR thresholds against the magnitude")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_privacy_utility(res):
    """Every curve (and the committed reference curves that carry these columns) on the test half: the
    independent copy rate and the paper's pixel criterion against every-phrasing CLIP on memorized prompts, and
    the copy rate against held-out every-phrasing CLIP (``privacy_utility``)."""
    curves = res.curve_rows()
    none_m = res.rows["none"].to_metrics()
    panels = (("copy_rate_memorized", "clip_phrasings_memorized"),
              ("replication_memorized", "clip_phrasings_memorized"),
              ("copy_rate_memorized", "clip_phrasings_heldout"))
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.8))
    for name, pts in curves.items():
        own = name in res.curves
        style = dict(marker="o" if own else "s", lw=1.6 if own else 0.8, alpha=1.0 if own else 0.6,
                     ls="-" if own else "--")
        for ax, (x, y) in zip(axes, panels):
            if all(x in p and y in p for p in pts):
                pts_xy = sorted([none_m] + list(pts), key=lambda r: r[x], reverse=True)
                ax.plot([p[x] for p in pts_xy], [p[y] for p in pts_xy], label=name, **style)
    if res.content is not None:
        c = res.content.to_metrics()
        for ax, (x, y) in zip(axes[:2], panels[:2]):
            ax.plot([c[x]], [c[y]], "k*", ms=10, label="content caption alone (reference)")
    axes[0].set(xlabel="independent copy rate (memorized), lower is more private",
                ylabel="every-phrasing CLIP, memorized", title="Privacy (independent detector) against utility")
    axes[1].set(xlabel="pixel Gu replication (memorized), the paper's criterion",
                ylabel="every-phrasing CLIP, memorized", title="... by the paper's pixel criterion")
    axes[2].set(xlabel="independent copy rate (memorized)", ylabel="every-phrasing CLIP, held-out",
                title="... and what each costs held-out prompts")
    for ax in axes:
        ax.invert_xaxis()
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def plot_magnitude_per_step(res, cfg):
    """Mean magnitude per step on memorized test prompts: PE, PR alone, and the original prompt along PR's
    trajectories, at every lambda (``magnitude_per_step``)."""
    steps = np.arange(cfg.num_steps)
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, (curve, extra) in zip(axes, (("PE", ""), ("PR alone", ""), ("PR alone", ", original prompt"))):
        ax.plot(steps, res.steps["none"], color="tab:red", lw=2, label="no mitigation")
        for k, label in enumerate(res.curves[curve]):
            if label + extra in res.steps:
                ax.plot(steps, res.steps[label + extra], color=cmap(k / max(len(res.lambdas) - 1, 1)),
                        label=f"lambda={res.lambdas[k]:g}")
        ax.set(xlabel="sampling step", title=f"{curve}{extra or ': prompt in use'}")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("mean magnitude a_t (memorized)")
    fig.tight_layout()
    return fig


def plot_search_grid(res):
    """SS's rewrites at PRSS's operating lambda and the first generation under each method, beside the planted
    image (``search_grid``); None when the grid holds no prompt."""
    g = res.grid
    n = len(g["captions"])
    if not n:
        return None
    labels = list(g["rows"]) + ["planted"]
    fig, axes = plt.subplots(len(labels), n, figsize=(2.1 * n, 1.9 * len(labels) + 1.2), squeeze=False)
    for j in range(n):
        for i, label in enumerate(labels):
            img = g["planted"][j] if label == "planted" else g["rows"][label][j]
            axes[i, j].imshow(to_hwc(img, (0, 1)), interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(label, fontsize=7)
        axes[0, j].set_title(f"{g['groups'][j]}\n{g['captions'][j][:34]} ({g['magnitude'][j]:.2f})\n-> "
                             f"{g['rewrites'][j][:34]} ({g['rewrite_magnitude'][j]:.2f})", fontsize=5)
    fig.suptitle(f"SS rewrites at PRSS's lambda = {res.operating_lambda['PRSS']:g} (first-step magnitudes in brackets)",
                 fontsize=9)
    fig.tight_layout()
    return fig
