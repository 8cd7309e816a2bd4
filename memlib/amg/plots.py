"""Notebook 04's figures (Chen, Liu, Xu, CVPR 2024): each function draws one figure from ``run_study``'s result
(the notebook saves it under the same name, ``figures/04_amg/<name>.png``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..plotting import to_hwc
from .report_tables import DESCRIPTOR_ROW, ROW_ORDER


def plot_sigma_calibration(res):
    """sigma_t of plain-CFG dev trajectories per group with the fitted lambda_t, and the per-step AUC
    (``sigma_calibration``)."""
    cal = res.calibration
    t = np.array(cal["timesteps"])
    sig, groups = res.dev_sigma, np.array(res.dev_groups)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for g, color in [("verbatim", "tab:red"), ("image_dup", "tab:orange"), ("caption_dup", "tab:purple"),
                     ("heldout", "tab:blue")]:
        s = sig[groups == g].reshape(-1, sig.shape[-1])
        if len(s):
            axes[0].plot(t, np.median(s, 0), color=color, label=f"{g} (median, {len(s)} trajectories)")
            axes[0].fill_between(t, np.percentile(s, 5, 0), np.percentile(s, 95, 0), color=color, alpha=0.15)
    th = cal["threshold"]
    lam = th["a"] + (th["b"] - th["a"]) * np.exp(-th["c"] * t)
    axes[0].plot(t, lam, "k--", label="fitted lambda_t")
    if "constant" in cal:
        axes[0].axhline(cal["constant"]["a"], color="k", lw=0.8, ls="-.",
                        label="constant threshold (same held-out firing share)")
    if "floor" in cal:
        axes[0].axhline(cal["floor"], color="grey", lw=0.8, ls="-.", label="switch always on: G_sim's level")
    axes[0].plot(t, cal["curve"], "k:", lw=0.8, label=f"held-out p{cal['percentile']:g} per step")
    axes[0].set(xlabel="timestep t (sampling runs right to left)",
                ylabel="sigma_t = NCC(x0_hat, nearest training image)",
                title="Dev half, plain CFG: sigma_t (5-95 % band)")
    axes[0].invert_xaxis()
    axes[0].legend(fontsize=7)
    axes[1].plot(t, res.sigma_auc_per_step, "o-")
    axes[1].set(xlabel="timestep t", ylabel="AUC memorized vs held-out", ylim=(0.4, 1.02), title="Separation per step")
    axes[1].invert_xaxis()
    fig.tight_layout()
    return fig


def plot_c3_dev_sweep(res, cfg):
    """Dev-half replication (pixel Gu, solid; independent copy rate, dashed) and content CLIP against c3, per G_sim
    schedule, with the descriptor-sigma variant's sweep where it ran (``c3_dev_sweep``)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    sweeps = dict(res.dev_sweep)
    if res.descriptor:
        sweeps[f"descriptor sigma, {res.descriptor['schedule']}"] = res.descriptor["dev_sweep"]
    for k, (sched, rows) in enumerate(sweeps.items()):
        c3 = [r["value"] for r in rows]
        axes[0].plot(c3, [r["replication_memorized"] for r in rows], "o-", color=f"C{k}", label=f"{sched} schedule")
        axes[0].plot(c3, [r.get("copy_rate_memorized", np.nan) for r in rows], "s--", color=f"C{k}", alpha=0.7,
                     label=f"{sched} schedule, copy rate")
        axes[1].plot(c3, [r["clip_content_memorized"] for r in rows], "o-", color=f"C{k}", label=f"{sched} schedule")
    axes[0].axhline(res.dev_none["replication_memorized"], color="grey", ls=":", label="no guidance")
    axes[0].axhline(res.dev_none.get("copy_rate_memorized", np.nan), color="grey", ls="--", lw=0.7,
                    label="no guidance, copy rate")
    axes[0].axhline(cfg.rep_bar, color="tab:red", lw=0.7, label="bar")
    axes[1].axhline(res.dev_none["clip_content_memorized"], color="grey", ls=":", label="no guidance")
    axes[0].set(xscale="log", xlabel="c3", ylabel="memorized: Gu replication / copy rate",
                title="Dev half: pixel Gu (solid), copy detector (dashed)")
    axes[1].set(xscale="log", xlabel="c3", ylabel="content-caption CLIP, memorized", title="Dev half: utility")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ablations(res):
    """Pixel Gu replication per planted group for every test-half row (Table 4 analogue), and the independent copy
    rate against every-phrasing CLIP (``ablations``); the descriptor-sigma row, whose copy rate is gamed, is left
    out."""
    labels = [k for k in ROW_ORDER if k in res.rows and k not in ("dup, y_N = top-k caption", DESCRIPTOR_ROW)]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    x = np.arange(len(labels))
    for k, g in enumerate(("verbatim", "image_dup", "caption_dup")):
        axes[0].bar(x + (k - 1) * 0.27, [res.rows[l].replication.get(g, np.nan) for l in labels], 0.27, label=g)
    axes[0].set_xticks(x, labels, rotation=55, ha="right", fontsize=7)
    axes[0].set(ylabel="replication (pixel Gu)", title="Per planted group (Table 4 analogue)")
    axes[0].legend(fontsize=7)
    for l in labels:
        r = res.rows[l]
        x, y = r.clip_phrasings["memorized"], r.copy_rate["memorized"]
        axes[1].plot(x, y, "o")
        axes[1].annotate(l, (x, y), fontsize=6)
    axes[1].set(xlabel="every-phrasing CLIP, memorized", ylabel="independent copy rate, memorized",
                title="Privacy (copy detector) against utility, every row")
    fig.tight_layout()
    return fig


def plot_per_step_terms(res, cfg):
    """Per step over the memorized test generations: where the switch fires and each term's mean weight, for
    Main and with the switch always on (``per_step_terms``)."""
    mem = np.isin(res.groups, ["verbatim", "image_dup", "caption_dup"])
    held = np.array(res.groups) == "heldout"
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.6))
    steps = np.arange(cfg.num_steps)
    for label, ls in (("AMG Main", "-"), ("switch always on", "--")):
        tr = res.traces[label]
        axes[0].plot(steps, tr["fired"][mem].reshape(-1, cfg.num_steps).mean(0), ls, label=f"{label}, memorized")
        axes[0].plot(steps, tr["fired"][held].reshape(-1, cfg.num_steps).mean(0), ls, label=f"{label}, held-out")
        for k, name in enumerate(("spe", "dup", "sim")):
            ax = axes[1] if name != "sim" else axes[2]
            ax.plot(steps, tr[name][mem].reshape(-1, cfg.num_steps).mean(0), ls, color=f"C{k}",
                    label=f"{name}, {label}")
    axes[0].set(xlabel="sampling step", ylabel="share of generations", title="Switch fired")
    axes[1].set(xlabel="sampling step", ylabel="mean weight (memorized)", title="s1 (spe) and s2 (dup)")
    axes[2].set(xlabel="sampling step", ylabel="mean G_sim scale (memorized)", title="Dissimilarity weight",
                yscale="symlog")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_grid_nearest(res):
    """First generation of memorized test prompts per run, with the nearest training image of the unguided and
    of the Main sample (``grid_nearest``); None when the grid holds no prompt."""
    g = res.grid
    rows = list(g["rows"]) + ["nearest to none", "nearest to AMG Main"]
    n = len(g["captions"])
    if not n:
        return None
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 1.9 * len(rows) + 0.6), squeeze=False)
    for j in range(n):
        for i, label in enumerate(rows):
            img = (g["nearest"]["none"][j] if label == "nearest to none" else
                   g["nearest"]["AMG Main"][j] if label == "nearest to AMG Main" else g["rows"][label][j])
            axes[i, j].imshow(to_hwc(img, (0, 1)), interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(label, fontsize=7)
        axes[0, j].set_title(g["captions"][j][:40], fontsize=6)
    fig.suptitle("Memorized test prompts under AMG, with nearest training images", fontsize=10)
    fig.tight_layout()
    return fig


def plot_digits_dev_sweep(res):
    """Per digits model: dev-seed Gu replication and Fréchet distance against c3, Main's c3 marked
    (``digits_dev_sweep``)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for ax, (name, d) in zip(axes, res.digits.items()):
        c3 = [float(k) for k in d.dev if k != "none"]
        ax.plot(c3, [d.dev[str(c)]["gu_replication"] for c in c3], "o-", label="Gu replication")
        ax2 = ax.twinx()
        ax2.plot(c3, [d.dev[str(c)]["frechet"] for c in c3], "s--", color="tab:green", label="Fréchet")
        ax.axhline(d.dev["none"]["gu_replication"], color="grey", ls=":")
        ax2.axhline(d.dev["none"]["frechet"], color="tab:green", ls=":", lw=0.7)
        ax.axvline(d.main_c3, color="tab:red", lw=0.8)
        ax.set(xscale="log", xlabel="c3", ylabel="Gu replication (dev seeds)", title=f"{name}: Main c3 = {d.main_c3:g}")
        ax2.set_ylabel("Fréchet distance (dev seeds)")
    fig.tight_layout()
    return fig


def plot_digits_grid(res):
    """Digits the unguided models copy (test seeds), the same noises under Main and Strong, and the copied digit
    (``digits_grid``)."""
    grid_rows = ["none", "AMG Main", "AMG Strong", "nearest training digit"]
    fig, axes = plt.subplots(2 * len(grid_rows), 10, figsize=(10, 2 * len(grid_rows) + 0.5), squeeze=False)
    for b, (name, d) in enumerate(res.digits.items()):
        for i, label in enumerate(grid_rows):
            imgs = d.grid[label]
            for j in range(10):
                ax = axes[b * len(grid_rows) + i, j]
                if j < len(imgs):
                    ax.imshow(imgs[j, 0], cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
            axes[b * len(grid_rows) + i, 0].set_ylabel(f"{name[:6]}\n{label}", fontsize=6)
    fig.suptitle("Digits the unguided models copy (test seeds), the same noises under AMG, and the copied digit",
                 fontsize=9)
    fig.tight_layout()
    return fig
