"""Notebook 01's figures (Wen et al., ICLR 2024, Sec. 3.1): each function draws one figure from ``run_study``'s
result (the notebook saves it under the same name, ``figures/01_detection/<name>.png``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import plotting
from ..metrics import roc
from ..splits import split
from .detection_report import VERMA_SD14


def _source_rows(res) -> list[dict]:
    """First step, one generation, test half: each seed's cell and the mean over seeds, per negative source."""
    rows = []
    for neg in res.negatives():
        for run in res.seeds:
            c = run.cell("first", 1, neg)
            rows.append(dict(source=f"{neg} ({c['n_neg']} neg.)", who=f"seed {run.seed}", auc=c["auc"],
                             auc_ci=c["auc_ci95"], tpr=c["tpr_at_1fpr"], tpr_ci=c["tpr_ci95"]))
        p = res.pooled("first", 1, neg)
        rows.append(dict(source=rows[-1]["source"], who="mean over seeds", auc=p["auc"], auc_ci=p["auc_ci95"],
                         tpr=p["tpr_at_1fpr"], tpr_ci=p["tpr_at_1fpr_ci95"]))
    return rows


def plot_auc_by_source(res):
    """Each seed's first-step AUC per negative source with Verma et al.'s SD v1.4 numbers dashed (``auc_by_source``)."""
    verma = {"Verma LAION": VERMA_SD14["generic"][0], "Verma random": VERMA_SD14["random"][0]}
    return plotting.interval_plot(_source_rows(res), "source", "auc", "auc_ci", "who",
                                  "Wen, first step, n = 1: AUC (test half)", "AUC", verma, xlim=(0.4, 1.01))


def plot_tpr_by_source(res):
    """... and the TPR at 1 % FPR (at zero false positives below 100 negatives) (``tpr_by_source``)."""
    verma = {"Verma LAION": VERMA_SD14["generic"][1], "Verma random": VERMA_SD14["random"][1]}
    return plotting.interval_plot(_source_rows(res), "source", "tpr", "tpr_ci", "who",
                                  "Wen, first step, n = 1: TPR at 1 % FPR (test half; < 100 negatives: at zero FP)",
                                  "TPR", verma, xlim=(-0.02, 1.02))


def plot_table(res):
    """Steps x generations per negative source, AUC and TPR, mean over seeds on the test half, with the tiled-l2
    baseline in the titles (``table_auc_tpr``)."""
    negatives, max_gens = res.negatives(), res.main.max_gens
    gens = sorted({1, max_gens})
    steps = ["first", "first10", "all"]
    fig, axes = plt.subplots(len(negatives), 2, figsize=(8, 2.6 * len(negatives)), squeeze=False)
    for row, neg in enumerate(negatives):
        for col, key in enumerate(["auc", "tpr_at_1fpr"]):
            grid = np.full((len(steps), len(gens)), np.nan)
            for i, s in enumerate(steps):
                for j, g in enumerate(gens):
                    try:
                        grid[i, j] = res.pooled(s, g, neg)[key]
                    except KeyError:   # not sampled that far for this source
                        pass
            ax = axes[row, col]
            ax.imshow(np.nan_to_num(grid, nan=0.0), vmin=0, vmax=1, cmap="viridis")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, "–" if np.isnan(v) else f"{v:.3f}", ha="center", va="center",
                        color="w" if np.isnan(v) or v < 0.6 else "k", fontsize=9)
            ax.set_xticks(range(len(gens)), [f"n={g}" for g in gens])
            ax.set_yticks(range(len(steps)), steps)
            title = f"{key} · memorized vs {neg}"
            try:
                base = res.pooled("baseline_tiled_l2", max_gens, neg)[key]
                title += f"\n(tiled-ℓ2 baseline, n={max_gens}: {base:.3f})"
            except KeyError:
                pass
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_roc(res, split_seed: int):
    """ROC curves of the first seed's test half per negative source: first step, n = 1; first 10 and all steps,
    n = max_gens; the tiled-l2 baseline (``roc``)."""
    run, negatives, max_gens = res.main, res.negatives(), res.main.max_gens

    def test_half(name, scores):
        s = run.setup.sets[name]
        keep = split(list(range(len(s.prompts))), lambda i: s.units[i], split_seed)["test"]
        return scores[name][keep]

    fig, axes = plt.subplots(1, len(negatives), figsize=(4.6 * len(negatives), 4), squeeze=False)
    for ax, neg in zip(axes[0], negatives):
        for (s, g), style in [(("first", 1), "-"), (("first10", max_gens), "-."), (("all", max_gens), "--")]:
            sc = run.scores(s, g)
            if neg not in sc:
                continue
            r = roc(np.concatenate([test_half(p, sc) for p in run.positives]), test_half(neg, sc))
            ax.plot(r.fpr, r.tpr, style, label=f"Wen, {s} step(s), n={g}: AUC {r.auc:.3f}")
        if neg in run.baseline:
            b = run.baseline
            r = roc(np.concatenate([test_half(p, b) for p in run.positives]), test_half(neg, b))
            ax.plot(r.fpr, r.tpr, ":", label=f"tiled ℓ2, n={max_gens}: AUC {r.auc:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"seed {run.seed}: memorized vs {neg}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_per_step_magnitude(res):
    """The first seed's text-conditional magnitude per sampling step, mean +- sd over prompts per set
    (``per_step_magnitude``)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, tn in res.main.text_norm.items():
        per_prompt = tn.mean(axis=1)
        mu, sd = per_prompt.mean(0), per_prompt.std(0)
        x = np.arange(len(mu))
        ax.plot(x, mu, label=f"{name} ({len(tn)})")
        ax.fill_between(x, mu - sd, mu + sd, alpha=0.15)
    ax.set(xlabel="sampling step (0 = first, t = 981)", ylabel="‖ε(x_t, e_p) − ε(x_t, e_∅)‖₂",
           title="Text-conditional noise magnitude per step")
    ax.legend(fontsize=8)
    return fig


def plot_score_histogram(res):
    """The first seed's first-step scores (one generation), positives and negatives (``score_histogram``)."""
    run = res.main
    keep = run.positives + res.negatives()
    return plotting.histograms({n: v for n, v in run.scores("first", 1).items() if n in keep},
                               "first-step score, one generation", "prompts", "Score distribution (first seed)",
                               bins=40, figsize=(6, 3.5))


def plot_dose_response(res):
    """First-step score and replication against training copies, every seed (``dose_response``); None when the
    run has no dose group (a real model)."""
    if not res.main.dose:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for run in res.seeds:
        c = [d["copies"] for d in run.dose]
        for ax, mean, ci in ((axes[0], "score_mean", "score_ci95"), (axes[1], "replication_rate", "replication_ci95")):
            if mean not in run.dose[0]:   # a real model: no replication measure
                continue
            val, lim = np.array([d[mean] for d in run.dose]), np.array([d[ci] for d in run.dose])
            ax.errorbar(c, val, yerr=[val - lim[:, 0], lim[:, 1] - val], marker="o", capsize=2,
                        label=f"seed {run.seed}")
    axes[0].set(xscale="log", xlabel="training copies", ylabel="first-step magnitude (n = 1)",
                title="Detection score vs copies")
    axes[1].set(xscale="log", xlabel="training copies", ylabel="share of generations that copy",
                title="Replication vs copies", ylim=(-0.03, 1.03))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
