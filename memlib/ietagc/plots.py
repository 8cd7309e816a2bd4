"""The figures of notebook 06 (IET-AGC, Liu et al., ECCV 2024; IET-AGC+, Guan et al., arXiv 2502.09434), each
drawn from a study result (``study.IETAGCResult``); the notebook saves them with ``memlib.plotting.save_figure``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_premise(res):
    """AGC's premise along each baseline's training: planted / ordinary loss and its AUC per probed timestep."""
    metrics, kinds = res.to_metrics(), res.kinds()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for n, per_step in metrics["premise_during_training"].items():
        steps_ = [int(s) for s in per_step]
        for j, t in enumerate(next(iter(per_step.values()))):
            kw = dict(color=plt.get_cmap("viridis")(j / 3), ls="-" if n == kinds["baseline"][0] else "--",
                      label=f"t={t}" if n == kinds["baseline"][0] else None)
            axes[0].plot(steps_, [per_step[s][t]["ratio"] for s in per_step], marker="o", **kw)
            axes[1].plot(steps_, [per_step[s][t]["auc"] for s in per_step], marker="o", **kw)
    axes[0].axhline(1 / 2, color="k", lw=0.7, ls=":", label="1/r: skipped when the loss is below this share of M[t]")
    axes[0].set(xlabel="baseline training step", ylabel="planted / ordinary loss",
                title="Premise during training (lines: seeds)")
    axes[1].set(xlabel="baseline training step", ylabel="AUC, lower loss = planted", ylim=(0.4, 1.02))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _bars(ax, x, values, cis, color):
    v = np.array(values, dtype=float)
    ci = np.array([c if isinstance(c, list) else [np.nan, np.nan] for c in cis], dtype=float)
    ax.bar(x, v, yerr=[np.nan_to_num(v - ci[:, 0]), np.nan_to_num(ci[:, 1] - v)], capsize=3, color=color)


def plot_components(res):
    """Every final model's independent copy rate and memorization score (with their intervals) and Fréchet
    distance, against the real held-out digits' floors."""
    metrics = res.to_metrics()
    tau = metrics["mem_threshold"]
    comps = metrics["components"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 3.8))
    names = list(comps)
    x = np.arange(len(names))
    _bars(axes[0], x, [comps[n]["copy_rate"] for n in names], [comps[n]["copy_rate_ci"] for n in names], "tab:purple")
    axes[0].axhline(metrics["copy_rate_heldout_real"], color="k", ls=":", lw=0.8, label="real held-out digits")
    axes[0].set(ylabel="copy rate (independent detector)", title="(b) Copies the detector calls (test seeds)")
    _bars(axes[1], x, [comps[n]["mem_score"] for n in names], [comps[n]["mem_score_ci"] for n in names], "tab:red")
    axes[1].axhline(metrics["mem_score_heldout_real"], color="k", ls=":", lw=0.8, label="real held-out digits")
    axes[1].set(ylabel=f"memorization score (ratio < {tau:.3g})", title="(a) The papers' criterion (test seeds)")
    axes[2].bar(x, [comps[n]["frechet"] for n in names], color="tab:blue")
    axes[2].axhline(metrics["frechet_floor"], color="k", ls=":", lw=0.8, label="floor (real training digits)")
    axes[2].set(ylabel="Fréchet distance (classifier features)", title="Fidelity (lower is better)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_frontier(res):
    """The baseline's checkpoints (memorization score, and copy rate where the probes recorded it, against Fréchet
    distance), their frontiers, the control, and each IET run's final round."""
    metrics, kinds = res.to_metrics(), res.kinds()
    copy = bool(metrics["frontier_copy"])
    fig, axes = plt.subplots(1, 2 if copy else 1, figsize=(15 if copy else 8, 5), squeeze=False)
    panels = [("mem_score", "frontier", "probe_mem_score", "memorization score (probe)")]
    if copy:
        panels.append(("copy_rate", "frontier_copy", "probe_copy_rate", "copy rate (probe, independent detector)"))
    for ax, (key, names, probe_key, ylabel) in zip(axes[0], panels):
        for n in kinds["baseline"] + kinds["long"]:
            pts = [p for p in metrics["frontier_points"] if p["run"] == n]
            ax.plot([p["frechet"] for p in pts], [p[key] for p in pts], "o-", alpha=0.6, label=f"{n} checkpoints")
            for p in pts[:: max(1, len(pts) // 4)]:
                ax.annotate(str(p["step"]), (p["frechet"], p[key]), fontsize=6)
        front = [p for p in metrics["frontier_points"] if f"{p['run']}@{p['step']}" in metrics[names]]
        front = sorted(front, key=lambda p: p["frechet"])
        ax.plot([p["frechet"] for p in front], [p[key] for p in front], "k--", lw=1, label="frontier")
        ctl = metrics["control_points"]
        if ctl:
            ax.plot([p["frechet"] for p in ctl], [p[key] for p in ctl], "s:", color="grey", alpha=0.8,
                    label=f"{ctl[0]['run']} checkpoints (control: K x batch)")
        for n, v in metrics["frontier_test"].items():
            ax.plot(v["probe_frechet"], v[probe_key], "*", ms=12, label=f"{n} (final round)")
        ax.set_xscale("log")
        ax.set(xlabel="Fréchet distance (probe, log scale)", ylabel=ylabel, title="Memorization against fidelity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_rounds(res):
    """Each IET run's averaged model after every round against the baseline's checkpoints, by probe visits."""
    metrics, kinds = res.to_metrics(), res.kinds()
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    for n in kinds["baseline"] + kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]:
        if n in metrics["rounds"]:
            pts = metrics["rounds"][n]
            style = dict(marker=".", lw=1.5)
        else:
            pts = [p for p in metrics["frontier_points"] if p["run"] == n]
            style = dict(marker="o", ls="--", color="k", alpha=0.5)
        for ax, key in zip(axes, ("mem_score", "gu_replication", "frechet")):
            ax.plot([p["visits"] for p in pts], [p[key] for p in pts], label=n, **style)
    for p_ in [metrics["control_points"]] if metrics["control_points"] else []:
        for ax, key in zip(axes, ("mem_score", "gu_replication", "frechet")):
            ax.plot([p["visits"] for p in p_], [p[key] for p in p_], "s:", color="grey", label=p_[0]["run"])
    for ax, title in zip(axes, ("memorization score", "Gu replication", "Fréchet distance")):
        ax.set(xlabel="probe sample visits", title=title)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_loss_threshold(res):
    """Per-row losses of ordinary and planted rows under the full method's final model, against AGC's skip
    threshold M[t]/r of its proxies at the end of training."""
    kinds = res.kinds()
    full0 = kinds["full"][0]
    fig, axes = plt.subplots(1, len(res.losses[full0]), figsize=(16, 3.2))
    for ax, (t, L) in zip(axes, res.losses[full0].items()):
        bins = np.linspace(0, max(max(L["ordinary"]), max(L["planted"])), 40)
        ax.hist(L["ordinary"], bins=bins, alpha=0.6, density=True, label="ordinary rows")
        ax.hist(L["planted"], bins=bins, alpha=0.6, density=True, label="planted digits")
        thr = res.thresholds[t]
        ax.axvline(thr["mean"], color="k", ls="--", label="M[t]/r (skip below)")
        ax.axvspan(thr["min"], thr["max"], color="k", alpha=0.1)
        ax.set(title=f"t = {t}", xlabel="per-row loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_samples(res):
    """The first 16 test-seed samples of the baseline and of the full method (first seeds), each above its nearest
    training digit."""
    kinds = res.kinds()
    b0, full0 = kinds["baseline"][0], kinds["full"][0]
    show = [(b0, res.samples[b0]), ("nearest", res.nearest[b0]), (full0, res.samples[full0]),
            ("nearest", res.nearest[full0])]
    fig, axes = plt.subplots(len(show), 16, figsize=(12, 3.4))
    for i, (name, imgs) in enumerate(show):
        for j in range(16):
            axes[i, j].imshow(imgs[j, 0], cmap="gray_r", vmin=-1, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return fig


def plot_underfit(res):
    """Each final model's nearest-training distance d1 (5/25/50/75/95 % quantiles of its samples) beside real
    held-out digits: boxes above the real digits' median line are samples farther from the data than unseen
    digits are (under-fitting), whatever their copy counts."""
    metrics = res.to_metrics()
    comps = {n: r for n, r in metrics["components"].items() if "d1_quantiles" in r}
    ref = metrics.get("underfit_heldout_real")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(comps) + 2), 3.8))
    if not comps or not ref:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return fig
    names = list(comps) + ["real held-out"]
    quantiles = [comps[n]["d1_quantiles"] for n in comps] + [ref["d1_quantiles"]]
    stats = [{"label": n, "whislo": q[0], "q1": q[1], "med": q[2], "q3": q[3], "whishi": q[4], "fliers": []}
             for n, q in zip(names, quantiles)]
    ax.bxp(stats, showfliers=False)
    ax.axhline(ref["d1_quantiles"][2], color="k", ls=":", lw=0.8, label="real held-out digits' median")
    for i, n in enumerate(comps, start=1):
        ax.annotate(f"{comps[n]['farther_than_real_share']:.0%}", (i, comps[n]["d1_quantiles"][4]),
                    ha="center", va="bottom", fontsize=7)
    ax.set(ylabel="squared distance to nearest training digit (d1)",
           title="Under-fitting check: samples farther from the data than unseen digits (% above the line)")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
