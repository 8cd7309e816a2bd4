"""Notebook 03's figures (Wen et al., ICLR 2024, Sec. 4): each function draws one figure from ``run_study``'s
result (the notebook saves it under the same name, ``figures/03_mitigation/<name>.png``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..plotting import to_hwc


def plot_calibration_dev(res):
    """Dev half: the joint first-step magnitudes per group with the l_target sweep, and PE's pooled memorized
    replication at each l_target with the operating point (``calibration_dev``)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for g, v in res.dev_magnitudes.items():
        axes[0].hist(v, bins=20, alpha=0.55, label=f"{g} ({len(v)})")
    for lt in res.l_targets:
        axes[0].axvline(lt, color="k", lw=0.7, ls="--")
    axes[0].set(xlabel="joint first-step magnitude L_p(e_p) over the n noises", ylabel="dev prompts",
                title="Dev half: where the l_target sweep sits (dashed)")
    axes[0].legend(fontsize=7)
    dev_none, dev_pe = res.dev_rows[0], res.dev_rows[1:]
    axes[1].plot([r.value for r in dev_pe], [r.replication["memorized"] for r in dev_pe], "o-",
                 label="PE: pixel Gu (chooses)")
    axes[1].plot([r.value for r in dev_pe], [r.copy_rate.get("memorized", np.nan) for r in dev_pe], "s--",
                 color="tab:purple", label="PE: copy rate (not used)")
    axes[1].axhline(dev_none.replication["memorized"], color="grey", ls=":", label="no mitigation (pixel Gu)")
    if res.pe_operating_l_target is not None:
        axes[1].axvline(res.pe_operating_l_target, color="tab:red", lw=0.8, label="operating point")
    axes[1].set(xlabel="l_target", ylabel="pooled memorized rate", ylim=(-0.03, 1.03),
                title="Dev half: PE's replication by l_target")
    axes[1].invert_xaxis()
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _phrasings(r, group: str = "memorized") -> float:
    return r.clip_phrasings.get(group, np.nan)


def plot_privacy_utility(res):
    """Test half: every method over its knob, the independent copy rate, the paper's pixel Gu replication and the
    NCC to the planted image against every-phrasing CLIP, and the price on held-out prompts; plain CFG as a star,
    the content caption alone as a cross (``privacy_utility``)."""
    none = res.none
    methods = list(dict.fromkeys(r.method for r in res.rows if r.method != "none"))
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    ys = [lambda r: r.copy_rate.get("memorized", np.nan), lambda r: r.replication["memorized"],
          lambda r: r.similarity_mean["memorized"]]
    for k, name in enumerate(methods):
        rs = [r for r in res.rows if r.method == name]
        style = dict(marker="o", lw=2.2 if name == "wen_pe" else 1.2,
                     color="tab:red" if name == "wen_pe" else f"C{k}")
        x = [_phrasings(r) for r in rs]
        for ax, y in zip(axes[:3], ys):
            ax.plot(x, [y(r) for r in rs], label=name, **style)
        axes[3].plot([_phrasings(r, "heldout") for r in rs], [r.copy_rate.get("memorized", np.nan) for r in rs],
                     label=name, **style)
        for r, xi in zip(rs, x):
            axes[0].annotate(f"{r.value:g}", (xi, ys[0](r)), fontsize=6, alpha=0.7)
    for ax, y in zip(axes[:3], ys):
        ax.plot([_phrasings(none)], [y(none)], "k*", ms=14, label="no mitigation")
    axes[3].plot([_phrasings(none, "heldout")], [ys[0](none)], "k*", ms=14, label="no mitigation")
    ref = res.content_reference
    if ref is not None:
        for ax, y in zip(axes[:3], ys):
            ax.plot([_phrasings(ref)], [y(ref)], "kx", ms=10, label="content caption alone")
    axes[0].set(xlabel="every-phrasing CLIP, memorized prompts", ylabel="independent copy rate, memorized prompts",
                title="Copy rate vs utility (knob values annotated)")
    axes[1].set(xlabel="every-phrasing CLIP, memorized prompts", ylabel="pixel Gu replication, memorized prompts",
                title="The paper's pixel criterion vs utility")
    axes[2].set(xlabel="every-phrasing CLIP, memorized prompts", ylabel="mean NCC to the planted image",
                title="Similarity vs utility")
    axes[3].set(xlabel="every-phrasing CLIP, held-out prompts", ylabel="copy rate, memorized prompts",
                title="The price on held-out prompts")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_magnitude_rebound(res):
    """The per-step text-conditional magnitude after PE against plain CFG, memorized and held-out test prompts
    (``magnitude_rebound``)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    for ax, curves, title in [(axes[0], res.rebound, "memorized test prompts"),
                              (axes[1], res.rebound_heldout, "held-out test prompts")]:
        for k, (label, c) in enumerate(curves.items()):
            ax.plot(range(len(c)), c, color="k" if label == "none" else plt.cm.Reds(0.35 + 0.6 * k / len(curves)),
                    lw=2 if label == "none" else 1.2, label="no mitigation" if label == "none" else label)
        ax.set(xlabel="sampling step (0: x_T)", title=title)
    axes[0].set_ylabel("mean per-image magnitude")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_grid_before_after(res):
    """First generation of memorized test prompts under each method, the planted image last
    (``grid_before_after``); None when the grid holds no prompt (``grid_prompts = 0``)."""
    g = res.grid
    labels = list(g["rows"]) + ["planted training image"]
    n = len(g["captions"])
    if not n:
        return None
    fig, axes = plt.subplots(len(labels), n, figsize=(1.9 * n, 1.9 * len(labels) + 0.6), squeeze=False)
    for j in range(n):
        for i, label in enumerate(labels):
            img = g["planted"][j] if i == len(labels) - 1 else g["rows"][label][j]
            axes[i, j].imshow(to_hwc(img, (-1, 1) if i == len(labels) - 1 else (0, 1)), interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(label, fontsize=7)
        axes[0, j].set_title(g["captions"][j][:40], fontsize=6)
    fig.suptitle("Memorized test prompts: generations under each method and the planted image", fontsize=10)
    fig.tight_layout()
    return fig


def plot_filter_probe(res):
    """The probe on the shipped checkpoint: AUC of planted against ordinary training rows per timestep, and the
    medians beside each tau (``filter_probe``)."""
    p = res.probe
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].plot(p.timesteps, p.auc, "o-")
    axes[0].axhline(0.5, color="grey", ls=":")
    axes[0].set(xlabel="timestep t", ylabel="AUC, planted vs ordinary rows", ylim=(0.4, 1.02),
                title=f"Probe: {p.n_planted} planted vs {p.n_ordinary} ordinary training rows")
    axes[1].plot(p.timesteps, p.planted_median, "o-", label="planted rows (median)")
    axes[1].plot(p.timesteps, p.ordinary_median, "o-", label="ordinary rows (median)")
    for pc, tau in res.taus.items():
        axes[1].axhline(tau, color="k", lw=0.6, ls="--")
        axes[1].annotate(f"tau p{pc:g}", (p.timesteps[0], tau), fontsize=7)
    axes[1].set(xlabel="timestep t", ylabel="per-sample magnitude", title="Where a fixed tau cuts")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def filter_run_names(res) -> list[str]:
    """The filter runs' labels: the unfiltered run, then each tau (the dev half's choice marked)."""
    return ["unfiltered"] + [f"tau={r.value:g}" + (" (dev)" if r.value == res.filter_chosen_tau else "")
                             for r in res.filter_rows[1:]]


def _bars(ax, x, width, values, cis, label, color):
    v = np.array(values, float)
    lo, hi = np.array(cis, float).T if cis else (v, v)
    ax.bar(x, v, width, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], capsize=2, label=label, color=color)


def plot_filter_training(res):
    """The filtered runs against the unfiltered one (test half): the independent copy rate and pooled pixel Gu
    replication, pixel replication per planted group, held-out CLIP (content caption and every phrasing), and the
    held-out Fréchet distance beside its floor (``filter_training``); None without filter runs."""
    if not res.filter_rows:
        return None
    rows = res.filter_rows
    x = np.arange(len(rows))
    names = filter_run_names(res)
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.8))
    nan2 = (np.nan, np.nan)
    _bars(axes[0], x - 0.2, 0.4, [r.copy_rate.get("memorized", np.nan) for r in rows],
          [r.copy_rate_ci.get("memorized", nan2) for r in rows], "copy rate", "tab:purple")
    _bars(axes[0], x + 0.2, 0.4, [r.replication["memorized"] for r in rows],
          [r.replication_ci["memorized"] for r in rows], "pixel Gu, pooled", "tab:blue")
    axes[0].set_title("memorized prompts: copy rate and pooled pixel Gu", fontsize=9)
    groups = ("verbatim", "image_dup", "caption_dup")
    for k, g in enumerate(groups):
        _bars(axes[1], x + (k - 1) * 0.27, 0.27, [r.replication.get(g, np.nan) for r in rows],
              [r.replication_ci.get(g, nan2) for r in rows], g, f"C{k}")
    axes[1].set_title("pixel Gu replication by planted group", fontsize=9)
    _bars(axes[2], x - 0.2, 0.4, [r.clip_content["heldout"] for r in rows],
          [r.clip_content_ci["heldout"] for r in rows], "content caption", "grey")
    _bars(axes[2], x + 0.2, 0.4, [_phrasings(r, "heldout") for r in rows],
          [r.clip_phrasings_ci.get("heldout", nan2) for r in rows], "every phrasing", "tab:green")
    axes[2].set_title("held-out CLIP score", fontsize=9)
    _bars(axes[3], x, 0.6, [r.frechet["heldout"] for r in rows], None, None, "tab:blue")
    axes[3].axhline(rows[0].frechet_floor["heldout"], color="k", ls=":", lw=0.8, label="noise floor")
    axes[3].set_title("held-out Fréchet distance (no interval)", fontsize=9)
    for ax in axes:
        ax.set_xticks(x, names, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Training-time filter at equal steps and seed (test half, 95 % intervals over planted images)",
                 fontsize=10)
    fig.tight_layout()
    return fig
