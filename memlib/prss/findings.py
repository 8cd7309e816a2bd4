"""The README's PRSS block (Chen et al., CVPR 2025), generated from notebook 05's metrics; never typed in."""
from __future__ import annotations

from ..mitigate.evalset import MEMORIZED_GROUPS

# The README's results table: (metric key, what it is, target)
HEADLINES = [
    ("prss_verbatim_replication", "verbatim replication, PRSS (trigger-keeping rewrites) at its dev-chosen lambda",
     "<= 0.05"),
    ("prss_heldout_clip_change", "... held-out content-caption CLIP change (relative)", ">= -0.03"),
    ("prss_drop_verbatim_replication", "verbatim replication, PRSS with rewrites that may drop the trigger",
     "<= 0.05"),
    ("prss_drop_heldout_clip_change", "... held-out content-caption CLIP change (relative)", ">= -0.03"),
    ("prss_vs_pe_wins_matched_privacy", "matched privacy levels where PRSS's utility is at or above PE's (of 4)",
     ">= 3"),
    ("prss_drop_vs_pe_wins_matched_privacy", "... PRSS with rewrites that may drop the trigger (of 4)", ">= 3"),
    ("prss_evals_ratio", "model evaluations per image, PRSS / CFG", "report"),
    ("prss_seconds_ratio", "seconds per image, PRSS / CFG", "report"),
]


def _f(v, fmt=".3f") -> str:
    return "—" if v is None else format(v, fmt)


def _thresholds(m: dict) -> str:
    tau, M = m["tau"], m["M"]
    if isinstance(tau, (int, float)):
        return f"τ = {tau:.2f}, M = {M:.2f} (held-out magnitude percentiles, pooled over steps)"
    return (f"τ_t from {min(tau):.2f} to {max(tau):.2f} and M_t from {min(M):.2f} to {max(M):.2f} (held-out "
            "magnitude percentiles per step; the held-out magnitude grows along sampling)")


def _line(label: str, r: dict) -> str:
    ci = r["replication_ci_memorized"]
    groups = " / ".join(f"{r.get(f'replication_{g}', float('nan')):.2f}" for g in MEMORIZED_GROUPS)
    return (f"| {label} | {r['replication_memorized']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {groups} | "
            f"{r['similarity_mean_memorized']:.3f} | {r['clip_content_memorized']:.3f} | "
            f"{r['clip_content_heldout']:.3f} | {r['acted_heldout']:.2f} | "
            f"{r['evals_per_image']:.0f} / {1e3 * r['seconds_per_image']:.0f} |")


def prss_findings(m: dict) -> str:
    out = ["| PRSS on the testbed (test half) | replication [95 % CI] | verbatim / image dup / caption dup | "
           "NCC to planted | content CLIP | held-out CLIP | held-out acted on | evaluations / ms per image |",
           "|---" * 8 + "|", _line("none", m["rows"]["none"])]
    for curve, labels in m["curves"].items():
        out += [_line(label, m["rows"][label]) for label in labels]
    pg = m["cheap_check"]["per_group"]
    pg = {g: pg[g] for g in MEMORIZED_GROUPS + ("heldout",) if g in pg}
    v = pg.get("verbatim", {})
    stays = bool(v) and v["keep"].get("median", 0) >= 0.9 * v["original"]["median"]
    out += ["", "- **Cheap check** (dev half, joint first-step magnitude, medians): "
            + "; ".join(f"{g} {v['original']['median']:.2f}, best trigger-keeping rewrite "
                        f"{_f(v['keep'].get('median'), '.2f')}, best trigger-dropping rewrite "
                        f"{_f(v['drop'].get('median'), '.2f')}" for g, v in pg.items())
            + (". Rewrites that keep a verbatim prompt's trigger stay within 10 % of the prompt's magnitude (the "
               "model keys the planted image on the trigger), so on verbatim copies only re-anchoring can act."
               if stays else ".")]
    op = m["operating"]
    out.append(f"- Calibration (dev half): λ ∈ {{{', '.join(format(x, 'g') for x in m['lambdas'])}}} (notebook 03's "
               f"l_target sweep); {_thresholds(m)}; operating λ (best dev held-out CLIP with dev verbatim "
               "replication ≤ 0.05, else the lowest verbatim replication): "
               + ", ".join(f"{c} {v['lambda']:g}" for c, v in op.items()) + ".")
    for c, v in op.items():
        ci = v["verbatim_replication_ci95"]
        out.append(f"- **{c} at λ = {v['lambda']:g}** (test half): verbatim replication {v['verbatim_replication']:.3f} "
                   f"[{ci[0]:.3f}, {ci[1]:.3f}], pooled {v['replication']:.3f}, content CLIP {v['clip_memorized']:.3f}, "
                   f"held-out content CLIP {m['clip_heldout_none']:.3f} → {v['clip_heldout']:.3f} "
                   f"({v['heldout_clip_change']:+.1%}); bar (verbatim ≤ 0.05, held-out within 3 %) "
                   + ("met" if v["meets_bar"] else "**not met**")
                   + f"; {v['evals_ratio']:.2f}× the evaluations and {v['seconds_ratio']:.2f}× the seconds of CFG.")
    for src, cl in sorted(m["claims"].items(), key=lambda kv: kv[0] != "trigger-keeping rewrites"):
        a, h = cl["prss_above_pe_at_matched_privacy"], cl["prss_loses_at_most_half_of_pe_drop"]
        p, s = cl["pr_most_privacy"], cl["ss_best_utility"]
        out.append(f"- With {src}: PRSS at or above PE's curve at {a['wins']} of {a['of']} matched privacy levels "
                   "(replication " + ", ".join(f"{x:.2f}: {_f(u)} vs {_f(q)}" for x, u, q in
                                               zip(a["levels"], a["prss"] or [], a["pe"] or []))
                   + ") — " + ("reproduced" if a["holds"] else "**not reproduced**")
                   + f"; at PE's best privacy (λ = {h['pe_best_lambda']:g}, replication {h['pe_best_replication']:.3f}) "
                   f"PE loses {h['pe_clip_drop']:.3f} content CLIP and PRSS "
                   + ("never reaches that privacy" if h["prss_clip_drop"] is None else f"{h['prss_clip_drop']:.3f}")
                   + " — " + ("at most half, reproduced" if h["holds"] else "**not reproduced**")
                   + f"; PR alone has the lowest replication of PE, PR and SS at {len(p['lambdas'])} of {p['of']} λ "
                   + ("(reproduced)" if p["holds"] else "(**not reproduced**)")
                   + f", SS alone the highest content CLIP of the four at {len(s['lambdas'])} of {s['of']} "
                   + ("(reproduced)." if s["holds"] else "(**not reproduced**)."))
    gap, g1 = m.get("anchor_gap", {}), m["references"].get("guidance_1_verbatim_dev")
    if "PRSS" in gap and gap["PRSS"].get("verbatim") is not None:
        other = gap.get("PRSS, may drop trigger", {}).get("verbatim")
        out.append(f"- Why PRSS with trigger-keeping rewrites leaves verbatim copies (a hypothesis): on verbatim prompts "
                   f"the rewrite predicts almost what the original does, ‖ε_s − ε_p‖ / ‖ε_p − ε_∅‖ = "
                   f"{gap['PRSS']['verbatim']:.2f} on average where re-anchoring runs"
                   + (f" (against {other:.2f} when the trigger may be dropped)" if other is not None else "")
                   + ", so re-anchoring mostly lowers the guidance scale toward 1"
                   + (f", and at guidance 1 notebook 04 still finds verbatim replication {g1:.2f} (dev half)."
                      if g1 is not None else "."))
    rc, rb = m["rebound_claim"], m["rebound"]
    out.append("- Per-step magnitude of the prompt in use on memorized prompts (first step → mean of the second half): "
               + "; ".join(f"λ {lam}: PE {v['pe']['first']:.2f} → {v['pe']['late_mean']:.2f}, PR alone "
                           f"{v['pr']['first']:.2f} → {v['pr']['late_mean']:.2f}"
                           + (f" (the original prompt along PR's trajectories {v['pr_original_prompt']['first']:.2f} → "
                              f"{v['pr_original_prompt']['late_mean']:.2f})" if v.get("pr_original_prompt") else "")
                           for lam, v in rb.items())
               + f". PE rises after the first step at {len(rc['pe_rebounds'])} of {rc['of']} λ; PR alone stays below "
               f"PE at {len(rc['lambdas'])} of {rc['of']} — "
               + ("reproduced." if rc["holds"] else "**not reproduced: re-anchoring's magnitude rises more than PE's "
                  "on the testbed.**"))
    mu = m["matched_utility"]
    out.append("- At matched utility, PRSS's replication is at or below PE's at "
               + "; ".join(f"{v['wins']} of {v['n_levels']} levels with {src}" for src, v in mu.items()
                           if v.get("wins") is not None) + ".")
    mp = m["matched_privacy"].get("trigger-keeping rewrites", {})
    refs = mp.get("values", {})
    others = [k for k in refs if k not in m["curves"]]
    if others:
        lv = mp["levels"]
        out.append("- Content CLIP at the same privacy levels (" + ", ".join(f"{x:.2f}" for x in lv) + "), from the "
                   "committed runs of notebooks 03 and 04 (— : outside that curve): " + "; ".join(
                       f"{k} {', '.join(_f(v) for v in refs[k])}" for k in others)
                   + "; against " + "; ".join(f"{k} {', '.join(_f(v) for v in refs[k])}" for k in refs
                                              if k in m["curves"]) + ".")
    else:
        out.append("- AMG and the baselines: " + "; ".join(v.get("reason", "") for v in
                                                          m["references"]["sources"].values()))
    return "\n".join(out)
