"""Notebook 02's figures (Wen et al., ICLR 2024, Sec. 3.2): each function draws one figure from ``run_study``'s
result (the notebook saves it under the same name, ``figures/02_explain/<name>.png``) and returns None where the
run holds nothing to draw."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .explain_study import top2_hit

ROUTES = {"full": "prompt as is", "padding_rows_from_empty": "EOS/padding rows\nfrom the empty prompt",
          "prompt_rows_from_empty": "token rows\nfrom the empty prompt"}


def plot_tokens(res, cfg, group: str, k: int = 6):
    """Per-token significance SS(i) of the first ``k`` prompts of ``group``, trigger pieces in red
    (``tokens_<group>``)."""
    atts = res.attributions.get(group, [])[:k]
    if not atts:
        return None
    trig = res.triggers.get(group, [[]] * len(atts))
    fig, axes = plt.subplots(1, len(atts), figsize=(2.9 * len(atts), 2.9), squeeze=False)
    for ax, a, t in zip(axes[0], atts, trig):
        colours = ["tab:red" if i in t else "tab:blue" for i in range(len(a.tokens))]
        ax.bar(range(len(a.tokens)), a.significance, color=colours)
        ax.set_xticks(range(len(a.tokens)), a.tokens, rotation=70, fontsize=7)
        ax.set_title(f"magnitude {a.magnitude:.2f}", fontsize=8)
    axes[0, 0].set_ylabel(f"mean ‖∂L_t/∂eⁱ‖, {len(cfg.steps())} of {cfg.num_steps} steps")
    fig.suptitle(f"{group}: per-token significance", fontsize=10)
    fig.tight_layout()
    return fig


def plot_attribution_methods(res, cfg):
    """Top-2 rates of Wen's settings and the cross-checks per trigger group, and the first-step magnitude along
    the integrated-gradients path for each verbatim prompt (``attribution_methods``)."""
    if not res.integrated.get("verbatim"):
        return None
    stats = res.trigger_stats
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 3.8))
    # (value, 95 % interval or None) per method; Wen's settings on the test half, the cross-checks on all prompts
    methods = {"Wen, exact setting\n(test half)": lambda st: (st.halves.all_steps_test,
                                                              st.halves.all_steps_test_ci95),
               "Wen, dev-chosen\nwindow (test half)": lambda st: (st.halves.window_test, st.halves.window_test_ci95),
               "Wen, reference code's\ntrajectory (test half)":
                   lambda st: (st.halves.reference_trajectory_test, st.halves.reference_trajectory_test_ci95),
               "occlusion, first\nstep (all prompts)": lambda st: (st.trigger_top2_rate_occlusion, None),
               "integrated gradients,\nfirst step (all)": lambda st: (st.trigger_top2_rate_integrated, None),
               "gradient at input\nembeddings, first step (all)":
                   lambda st: (st.trigger_top2_rate_input_embedding, None)}
    width = 0.38
    for k, (g, st) in enumerate(stats.items()):
        vals = [m(st) for m in methods.values()]
        x = np.arange(len(methods)) + (k - 0.5) * width
        axes[0].bar(x, [np.nan if v is None else v for v, _ in vals], width, label=g)
        for xi, (v, ci) in zip(x, vals):
            if v is not None and ci is not None:
                axes[0].plot([xi, xi], ci, color="black", lw=0.8)
        axes[0].axhline(st.halves.chance_test, color=f"C{k}", ls=":", lw=1)
    axes[0].axhline(0.8, color="black", lw=0.8, ls="--", label="withdrawn bar (0.80)")
    axes[0].set_xticks(range(len(methods)), list(methods), fontsize=7)
    axes[0].set(ylim=(0, 1.05), ylabel="trigger in top 2 (share of prompts)",
                title="Attribution methods (black: 95 % CI; dotted: chance, test half)")
    axes[0].legend(fontsize=7, loc="lower right")
    ig, wen, pos = res.integrated["verbatim"], res.attributions["verbatim"], res.triggers["verbatim"]
    alphas = (np.arange(cfg.ig_points) + 0.5) / cfg.ig_points
    for a, w, t in zip(ig, wen, pos):
        hit = top2_hit(w.over_first(1).significance, t)
        axes[1].plot(alphas, a.path / a.magnitude, color="tab:blue" if hit else "tab:red", lw=0.8, alpha=0.7)
    axes[1].plot([], [], color="tab:blue", label="Wen's first-step gradient finds the trigger")
    axes[1].plot([], [], color="tab:red", label="... misses it")
    axes[1].set(xlabel="a (embedding = e_empty + a (e_p - e_empty))", ylabel="first-step magnitude / d(p)",
                title="Verbatim prompts: magnitude along the path")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_padding_route(res):
    """Replication and first-step magnitude per row route, and the integrated-gradients share on the EOS/padding
    rows, per trigger group (``padding_route``)."""
    routed = {g: st for g, st in res.trigger_stats.items() if st.routes}
    if not routed:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    width = 0.38
    for k, (g, st) in enumerate(routed.items()):
        for ax, what in [(axes[0], "replication"), (axes[1], "first_step_magnitude")]:
            ax.bar(np.arange(len(ROUTES)) + (k - 0.5) * width, [getattr(st.routes[r], what) for r in ROUTES],
                   width, label=g)
    axes[0].set(ylim=(0, 1.05), ylabel="replication rate", title="Replication of the planted image")
    axes[1].set(ylabel="first-step magnitude d(p)", title="First-step magnitude")
    for ax in axes[:2]:
        ax.set_xticks(range(len(ROUTES)), list(ROUTES.values()), fontsize=7)
        ax.legend(fontsize=7)
    axes[2].bar(list(routed), [st.integrated_padding_share for st in routed.values()],
                color=["C0", "C1"][: len(routed)])
    axes[2].set(ylim=(0, 1.05), ylabel="share of d(p)", title="Integrated gradients on EOS/padding rows")
    fig.suptitle("Which rows carry the memorized prompt to the UNet", fontsize=10)
    fig.tight_layout()
    return fig


def plot_padding_route_heldout(res):
    """The padding control: the same row routes on held-out prompts (``padding_route_heldout``)."""
    hr = res.heldout_routes
    if not hr:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, what, label in [(axes[0], "top1_retrieval", "retrieved as its combination"),
                            (axes[1], "clip_score", "testbed CLIP score vs prompt"),
                            (axes[2], "first_step_magnitude", "first-step magnitude d(p)")]:
        ax.bar(list(ROUTES.values()), [getattr(hr[k], what) for k in ROUTES], color=["C2", "C0", "C1"])
        ax.set(title=label, ylim=(0, 1.05) if what == "top1_retrieval" else None)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Control: the same row routes on {hr['full'].n_prompts} held-out prompts "
                 "(nothing memorized)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_edit_top_token(res):
    """Magnitude before and after dropping each verbatim prompt's most significant token, and replication with
    the top token or the planted trigger dropped (``edit_top_token``)."""
    if not res.edits:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in [(axes[0], "first_step", "first step"), (axes[1], "magnitude", "mean over all steps")]:
        before = np.array([e[f"{key}_before"] for e in res.edits])
        after = np.array([e[f"{key}_after"] for e in res.edits])
        ax.scatter(before, after, s=14)
        lim = [0, max(before.max(), after.max()) * 1.05]
        ax.plot(lim, lim, color="grey", lw=0.6)
        ax.set(xlabel="magnitude, original prompt", ylabel="magnitude, top token dropped",
               title=f"{label}: lowered for {np.mean(after < before):.0%} of prompts")
    labels = {"before": "original", "after": "top token\ndropped", "trigger_dropped": "planted trigger\ndropped"}
    axes[2].bar(list(labels.values()), [np.mean([e[f"replication_{k}"] for e in res.edits]) for k in labels],
                color=["tab:red", "tab:green", "tab:grey"])
    axes[2].set(ylim=(0, 1.05), ylabel="replication rate", title="Replication of the planted image")
    fig.suptitle("Dropping the most significant token of each verbatim prompt (and, as a control, its trigger)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_drop_control(res):
    """Replication after dropping one token of each verbatim prompt, by kind of token and per prompt
    (``drop_control``)."""
    if not res.drops:
        return None
    trig = np.array([d["kind"] == "trigger_piece" for d in res.drops])
    rate = np.array([d["replication"] for d in res.drops])
    prompt = np.array([d["prompt"] for d in res.drops])
    per = [(rate[(prompt == p) & ~trig].mean(), rate[(prompt == p) & trig].mean()) for p in dict.fromkeys(prompt)]
    dc = res.drop_control
    by_kind = dc.replication_by_kind
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].bar([k.replace("_", " ") for k in by_kind], list(by_kind.values()),
                color=["tab:red", "tab:orange", "tab:blue"][: len(by_kind)])
    axes[0].set(ylim=(0, 1.05), ylabel="replication rate", title="Replication after dropping one token, by kind")
    other, trigger = np.array(per).T
    axes[1].scatter(other, trigger, s=16)
    axes[1].plot([0, 1], [0, 1], color="grey", lw=0.6)
    axes[1].set(xlabel="other token dropped (mean over tokens)", ylabel="trigger piece dropped (mean)",
                xlim=(-0.03, 1.03), ylim=(-0.03, 1.03),
                title=f"per prompt: trigger more necessary for {dc.trigger_more_necessary_share:.0%}")
    fig.suptitle("Drop control on the verbatim prompts (below the diagonal: the trigger matters more)", fontsize=10)
    fig.tight_layout()
    return fig
