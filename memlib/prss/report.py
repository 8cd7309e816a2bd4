"""Notebook 05's report (PRSS, Chen et al., CVPR 2025): the README rows, the tables and numbers of its results
block, and the paper's claims as measured, all from the metrics dict alone (``memlib results`` rebuilds them from
the committed ``figures/05_prss/metrics.json``). The block's sentences live in ``docs/templates/05_prss.md``."""
from __future__ import annotations


from ..claims import Claim, verdict
from ..mitigate.columns import markdown_row
from ..mitigate.evalset import MEMORIZED_GROUPS
from .results import REP, SOURCES, claims as comparisons, rebound_claim

VERBATIM_BAR = 0.05      # operating point: verbatim replication at most this (test half)
HELDOUT_BAR = -0.03      # ... and held-out content CLIP within 3 % of CFG
KEEP, DROP = "trigger-keeping rewrites", "rewrites that may drop the trigger"
OPERATING = {"pr_alone": "PR alone", "prss": "PRSS", "prss_drop": "PRSS, may drop trigger"}
NAN = float("nan")

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


def _line(label: str, r: dict) -> str:
    return markdown_row(label, r, f"{r['acted_heldout']:.2f}")


def testbed_table(m: dict) -> str:
    """Every curve point on the test half, no mitigation first."""
    out = ["| PRSS on the testbed (test half) | replication [95 % CI] | verbatim / image dup / caption dup | "
           "NCC to planted | content CLIP | held-out CLIP | held-out acted on | evaluations / ms per image |",
           "|---" * 8 + "|", _line("none", m["rows"]["none"])]
    for labels in m["curves"].values():
        out += [_line(label, m["rows"][label]) for label in labels]
    return "\n".join(out)


def cheap_check(m: dict) -> dict:
    """Per group (dev half): medians of the prompt's first-step magnitude and of its best rewrites."""
    pg = m["cheap_check"]["per_group"]
    return {g: pg[g] for g in MEMORIZED_GROUPS + ("heldout",) if g in pg}


def thresholds(m: dict) -> str:
    tau, M = m["tau"], m["M"]
    if isinstance(tau, (int, float)):
        return f"τ = {tau:.2f}, M = {M:.2f} (pooled over steps)"
    return f"τ_t from {min(tau):.2f} to {max(tau):.2f} and M_t from {min(M):.2f} to {max(M):.2f}"


def curve_rows(m: dict) -> dict[str, list[dict]]:
    """Each curve's test-half rows (as ``PRSSResult.curve_rows``), with the committed reference curves."""
    out = {c: [dict(m["rows"][lb], curve=c) for lb in labels] for c, labels in m["curves"].items()}
    out.update(m.get("reference_curves", {}))
    return out


def tests(m: dict) -> dict:
    """The paper's comparisons per candidate source, recomputed from the rows."""
    curves = curve_rows(m)
    lv = next((v["n_levels"] for v in m.get("matched_privacy", {}).values()), 4)
    return {src: comparisons(curves, m["rows"]["none"], lv, prss, ss)
            for src, (prss, ss) in SOURCES.items() if prss in curves}


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/05_prss.md``), from metrics alone."""
    pg = cheap_check(m)
    out = {"testbed_table": testbed_table(m), "verbatim_bar": VERBATIM_BAR, "heldout_bar": -HELDOUT_BAR,
           "thresholds": thresholds(m), "lambda_set": ", ".join(format(x, "g") for x in m["lambdas"]),
           "cheap_check": "; ".join(f"{g} {v['original']['median']:.2f} / {_f(v['keep'].get('median'), '.2f')} / "
                                    f"{_f(v['drop'].get('median'), '.2f')}" for g, v in pg.items()),
           "operating_lambdas": ", ".join(f"{c} {v['lambda']:g}" for c, v in m["operating"].items())}
    for prefix, curve in OPERATING.items():
        op = m["operating"].get(curve, {})
        for k in ("lambda", "verbatim_replication", "replication", "clip_memorized", "clip_heldout",
                  "heldout_clip_change", "evals_ratio", "seconds_ratio"):
            out.setdefault(f"{prefix}_{k}", op.get(k, NAN))
        out.setdefault(f"{prefix}_verbatim_replication_ci95", op.get("verbatim_replication_ci95", [NAN, NAN]))
    for key, src in (("keep", KEEP), ("drop", DROP)):
        cl = m["claims"].get(src)
        if cl is None:
            continue
        a, h = cl["prss_above_pe_at_matched_privacy"], cl["prss_loses_at_most_half_of_pe_drop"]
        p, s = cl["pr_most_privacy"], cl["ss_best_utility"]
        out.update({f"{key}_matched_wins": a["wins"], f"{key}_matched_of": a["of"],
                    f"{key}_matched_levels": ", ".join(f"{x:.2f}: {_f(u)} vs {_f(q)}" for x, u, q in
                                                       zip(a["levels"], a["prss"] or [], a["pe"] or [])),
                    f"{key}_pe_best_lambda": h["pe_best_lambda"],
                    f"{key}_pe_best_replication": h["pe_best_replication"],
                    f"{key}_pe_clip_drop": h["pe_clip_drop"],
                    f"{key}_prss_clip_drop": "— (never that private)" if h["prss_clip_drop"] is None
                    else f"{h['prss_clip_drop']:.3f}",
                    f"{key}_pr_lowest": len(p["lambdas"]), f"{key}_pr_of": p["of"],
                    f"{key}_ss_highest": len(s["lambdas"]), f"{key}_ss_of": s["of"]})
    gap = m.get("anchor_gap", {})
    out["anchor_gap_keep"] = (gap.get("PRSS") or {}).get("verbatim") or NAN
    out["anchor_gap_drop"] = (gap.get("PRSS, may drop trigger") or {}).get("verbatim") or NAN
    g1 = m["references"].get("guidance_1_verbatim_dev")
    out["guidance_1_verbatim"] = NAN if g1 is None else g1
    rb, rc = m["rebound"], m["rebound_claim"]
    out["rebound_steps"] = "; ".join(
        f"λ {lam}: PE {v['pe']['first']:.2f} → {v['pe']['late_mean']:.2f}, PR alone {v['pr']['first']:.2f} → "
        f"{v['pr']['late_mean']:.2f}" + (f" (original prompt {v['pr_original_prompt']['first']:.2f} → "
                                        f"{v['pr_original_prompt']['late_mean']:.2f})"
                                        if v.get("pr_original_prompt") else "") for lam, v in rb.items())
    out.update(pe_rebounds=len(rc["pe_rebounds"]), pr_below_pe=len(rc["lambdas"]), rebound_of=rc["of"])
    out["matched_utility"] = "; ".join(f"{v['wins']} of {v['n_levels']} levels with {src}"
                                       for src, v in m["matched_utility"].items() if v.get("wins") is not None)
    mp = m["matched_privacy"].get(KEEP, {})
    refs = mp.get("values", {})
    out["reference_levels"] = ", ".join(f"{x:.2f}" for x in mp.get("levels", [])) or "n/a"
    out["reference_clip"] = "; ".join(f"{k} {', '.join(_f(v) for v in refs[k])}" for k in refs
                                      if k not in m["curves"]) or "n/a"
    out["curve_clip"] = "; ".join(f"{k} {', '.join(_f(v) for v in refs[k])}" for k in refs if k in m["curves"]) \
        or "n/a"
    return out


def claims(m: dict) -> list[Claim]:
    """The paper's claims as notebook 05 measured them (test half), per candidate source."""
    copies = m["replication_rate_none"] > 0              # nothing to protect where nothing copies
    verbatim_copies = m["rows"]["none"].get("replication_verbatim", 0) > VERBATIM_BAR
    found = tests(m)
    out = []
    for prefix, curve in OPERATING.items():
        op = m["operating"].get(curve)
        holds = None if op is None else bool(op["verbatim_replication"] <= VERBATIM_BAR
                                             and op["heldout_clip_change"] >= HELDOUT_BAR)
        out.append(Claim(f"{prefix}_operating_bar", f"{curve} at its dev-chosen lambda leaves verbatim replication "
                         f"at most {VERBATIM_BAR:g} with held-out content CLIP within {-HELDOUT_BAR:.0%} of CFG",
                         verdict(holds, measured=op is not None and verbatim_copies),
                         {} if op is None else {k: op[k] for k in ("lambda", "verbatim_replication",
                                                                    "heldout_clip_change")}))
    for key, src in (("keep", KEEP), ("drop", DROP)):
        cl = found.get(src)
        named = lambda n, text, c=cl: Claim(f"{key}_{n}", f"{text} ({src})",
                                            verdict(None if c is None else c[n]["holds"],
                                                    measured=c is not None and copies),
                                            {} if c is None else {k: v for k, v in c[n].items() if k != "holds"})
        out += [named("prss_above_pe_at_matched_privacy", "PRSS keeps more utility than PE at matched privacy"),
                named("prss_loses_at_most_half_of_pe_drop",
                      "at PE's best privacy PRSS loses at most half of PE's content CLIP drop"),
                named("pr_most_privacy", "PR alone has the lowest replication of PE, PR and SS"),
                named("ss_best_utility", "SS alone has the highest content CLIP of the four")]
    rc = rebound_claim(m["rebound"])
    out.append(Claim("reanchoring_keeps_magnitude_low", "PE's magnitude rebounds after the first step, "
                     "re-anchoring's stays below it", verdict(rc["holds"], measured=copies and bool(m["rebound"])),
                     {"pr_below_pe": rc["lambdas"], "pe_rebounds": rc["pe_rebounds"], "of": rc["of"]}))
    v = cheap_check(m).get("verbatim", {})
    keep, orig = v.get("keep", {}).get("median"), v.get("original", {}).get("median")
    out.append(Claim("keep_rewrites_stay_high", "rewrites that keep a verbatim prompt's trigger stay within 10 % of "
                     "its first-step magnitude", verdict(None if keep is None else keep >= 0.9 * orig,
                                                         measured=keep is not None and orig is not None),
                     {"original": orig, "best_keep": keep}))
    return out
