"""Notebook 05's report (PRSS, Chen et al., CVPR 2025): the README rows, the tables and numbers of its results
block, and the paper's claims as measured, all from the metrics dict alone (``memlib results`` rebuilds them from
the committed ``figures/05_prss/metrics.json``). The block's sentences live in ``docs/templates/05_prss.md``.

Every claim is judged from a stored paired interval (``memlib.prss.judge``): it holds only when the interval
excludes zero (or the bar) on the claimed side. Metrics of a run made before the intervals were stored give
"not measured".
"""
from __future__ import annotations

from ..claims import Claim, verdict
from . import judge
from .results import OWN, POINTS, TRANSFER
from .tables import NAN, change, groups_table, num, points_table, seed_table, testbed_table

VERBATIM_BAR = 0.05      # operating point: verbatim replication at most this (test half)
HELDOUT_BAR = -0.03      # ... and held-out every-phrasing CLIP within 3 % of CFG (paired relative change)
KEEP_BAR = -0.10         # cheap check: a trigger-keeping rewrite's magnitude within 10 % of the prompt's
KEEP, DROP = "trigger-keeping rewrites", "rewrites that may drop the trigger"
OPERATING = {"pr_alone": "PR alone", "prss": "PRSS", "prss_drop": "PRSS, may drop trigger"}
SEED_SHOWN = "1"         # the further testbed seed the page reports beside seed 0
SEED_ROWS = {f"{prefix}_{kind}": f"{curve}, {label}" for kind, label, curves in (
    ("transfer", TRANSFER, ("PR alone", "PRSS", "PRSS, may drop trigger")),
    ("own", OWN, ("PRSS", "PRSS, may drop trigger"))) for prefix, curve in OPERATING.items() if curve in curves}

# The README's results table: (metric key, what it is, target). No target is set for a method's privacy or
# utility: the rows report what the methods do, under a detector none of them can see.
HEADLINES = [
    ("prss_copy_rate", "independent copy rate of memorized prompts, PRSS (the faithful reading: trigger-keeping "
     "rewrites) at its dev-chosen lambda", "report"),
    ("copy_rate_none", "... without mitigation", "report"),
    ("prss_drop_copy_rate", "... PRSS with rewrites that may drop the trigger (removes the memorized key: upper "
     "bound)", "report"),
    ("prss_verbatim_replication", "pixel Gu replication of verbatim prompts (the paper's criterion), PRSS (the "
     "faithful reading)", "report"),
    ("prss_heldout_clip_phrasings_change", "... held-out every-phrasing CLIP change (relative)", "report"),
    ("prss_vs_pe_wins_matched_privacy", "matched copy-rate levels where PRSS's every-phrasing CLIP is above PE's "
     "by a paired interval (of 4)", "report"),
    ("prss_drop_vs_pe_wins_matched_privacy", "... PRSS with rewrites that may drop the trigger (of 4)", "report"),
    ("prss_evals_ratio", "model evaluations per image, PRSS / CFG", "report"),
]


def cheap_check(m: dict) -> dict:
    """Per group (dev half): medians of the prompt's first-step magnitude and of its best rewrites."""
    pg = m["cheap_check"]["per_group"]
    return {g: pg[g] for g in ("verbatim", "image_dup", "caption_dup", "heldout") if g in pg}


def thresholds(m: dict) -> str:
    tau, M = m["tau"], m["M"]
    if isinstance(tau, (int, float)):
        return f"τ = {tau:.2f}, M = {M:.2f} (pooled over steps)"
    return f"τ_t from {min(tau):.2f} to {max(tau):.2f} and M_t from {min(M):.2f} to {max(M):.2f}"


def _levels(mp: dict, y: str = "values") -> str:
    """Per matched level: b's value vs a's, and (for the compared column) b minus a, paired."""
    a, b = mp.get("a", "PE"), mp.get("b")
    vals, pds = mp.get(y, {}), mp.get("paired", []) if y == "values" else []
    return "; ".join(f"{x:.3f}: {num(u)} vs {num(q)}" + (f", {change(pds[k])}" if k < len(pds) else "")
                     for k, (x, u, q) in enumerate(zip(mp.get("levels", []), vals.get(b) or [], vals.get(a) or [])))\
        or "n/a"


def _source_values(key: str, c: dict | None) -> dict:
    if c is None:
        c = {"matched_privacy": {}, "matched_utility": {}, "half_drop": {}, "pr_most_privacy": {},
             "ss_best_utility": {}}
    mp, mu, hd = c["matched_privacy"], c["matched_utility"], c["half_drop"]
    found = {n: f(c) for n, f in CHECKS.items()}
    return {f"{key}_matched_wins": found["prss_above_pe_at_matched_privacy"][1],
            f"{key}_matched_of": len(mp.get("paired", [])), f"{key}_matched_levels": _levels(mp),
            f"{key}_matched_content_levels": _levels(mp, "also"),
            f"{key}_utility_wins": found["prss_copies_less_at_matched_utility"][1],
            f"{key}_utility_of": len(mu.get("paired", [])), f"{key}_utility_levels": _levels(mu),
            f"{key}_pe_best_lambda": hd.get("pe_best_lambda", NAN), f"{key}_pe_best_copy": hd.get("pe_best_x", NAN),
            f"{key}_pe_drop": change(hd.get("pe_drop")), f"{key}_half_test": change(hd.get("test")),
            f"{key}_prss_drop": "— (never that private: its most private point minus PE's copy rate "
                                f"{change(hd.get('reach'))})" if hd.get("reach") else num(hd.get("prss_drop", NAN)),
            f"{key}_pr_lowest": found["pr_most_privacy"][1],
            f"{key}_pr_of": len(c["pr_most_privacy"].get("lambdas", [])),
            f"{key}_ss_highest": found["ss_best_utility"][1],
            f"{key}_ss_of": len(c["ss_best_utility"].get("lambdas", []))}


def _point_values(m: dict) -> dict:
    out = {}
    for curve, (prefix, _) in POINTS.items():
        p, op = m.get("points", {}).get(curve, {}), m.get("operating", {}).get(curve, {})
        v = p.get("vs_none", {})
        out.update({f"{prefix}_{k}": p.get(k, m.get(f"{prefix}_{k}", NAN)) for k in (   # old runs: flat keys
            "lambda", "copy_rate", "replication", "nn_is_planted", "clip_phrasings_memorized", "clip_memorized",
            "clip_phrasings_heldout", "clip_heldout")})
        out.update({f"{prefix}_{k}": p.get(k, [NAN, NAN]) for k in ("copy_rate_ci95", "replication_ci95")})
        out.update({f"{prefix}_{k}_change": change(v.get(k)) for k in (
            "copy_rate", "replication", "nn_is_planted", "clip_phrasings", "clip_content")})
        out[f"{prefix}_heldout_phrasings_change"] = change(v.get("heldout_clip_phrasings_relative"))
        for k in ("lambda", "verbatim_replication", "verbatim_copy_rate", "evals_ratio", "heldout_clip_change"):
            out[f"{prefix}_{k}"] = op.get(k, out.get(f"{prefix}_{k}", NAN))
        for k in ("verbatim_replication_ci95", "verbatim_copy_rate_ci95"):
            out[f"{prefix}_{k}"] = op.get(k, [NAN, NAN])
    return out


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/05_prss.md``), from metrics alone."""
    pg = cheap_check(m)
    comp = m.get("comparisons", {})
    s = m.get("seeds", {}).get(SEED_SHOWN, {})
    out = {"testbed_table": testbed_table(m), "points_table": points_table(m), "groups_table": groups_table(m),
           "seed_table": seed_table(m, SEED_SHOWN), "seed_shown": SEED_SHOWN,
           "seed_checkpoint": s.get("checkpoint", "n/a"),
           "seed_own_lambdas": ", ".join(f"{c} {v:g}" for c, v in s.get("operating", {}).items()) or "n/a",
           "seed_lambda_set": ", ".join(format(x, "g") for x in s.get("lambdas", [])) or "n/a",
           "seed_nn_chance": s.get("nn_chance", NAN),
           "verbatim_bar": VERBATIM_BAR, "heldout_bar": -HELDOUT_BAR, "keep_bar": -KEEP_BAR,
           "thresholds": thresholds(m), "lambda_set": ", ".join(format(x, "g") for x in m["lambdas"]),
           "cheap_check": "; ".join(f"{g} {v['original']['median']:.2f} / {num(v['keep'].get('median'), '.2f')} / "
                                    f"{num(v['drop'].get('median'), '.2f')}" for g, v in pg.items()),
           "keep_check": change(pg.get("verbatim", {}).get("keep_vs_original")),
           "operating_lambdas": ", ".join(f"{c} {v['lambda']:g}" for c, v in m["operating"].items())}
    for key in ("copy_rate_none", "nn_is_planted_none", "clip_phrasings_none", "clip_phrasings_heldout_none",
                "nn_chance"):
        out[key] = m.get(key, NAN) if m.get(key) is not None else NAN
    out["copy_rate_none_ci95"] = m.get("copy_rate_none_ci95") or [NAN, NAN]
    out.update(_point_values(m))
    for key, src in (("keep", KEEP), ("drop", DROP)):
        out.update(_source_values(key, comp.get(src)))
    gap = m.get("anchor_gap", {})
    out["anchor_gap_keep"] = (gap.get("PRSS") or {}).get("verbatim") or NAN
    out["anchor_gap_drop"] = (gap.get("PRSS, may drop trigger") or {}).get("verbatim") or NAN
    g1 = m["references"].get("guidance_1_verbatim_dev")
    out["guidance_1_verbatim"] = NAN if g1 is None else g1
    rb = m["rebound"]
    out["rebound_steps"] = "; ".join(
        f"λ {lam}: PE {v['pe']['first']:.2f} → {v['pe']['late_mean']:.2f}, PR alone {v['pr']['first']:.2f} → "
        f"{v['pr']['late_mean']:.2f}" + (f" (original prompt {v['pr_original_prompt']['first']:.2f} → "
                                        f"{v['pr_original_prompt']['late_mean']:.2f})"
                                        if v.get("pr_original_prompt") else "")
        + (f", PR minus PE {change(v['paired_late'], '+.2f')}" if v.get("paired_late") else "")
        for lam, v in rb.items())
    below = [judge.holds(v.get("paired_late"), "lower") for v in rb.values()]
    out.update(pe_rebounds=sum(v["pe"]["rebound"] > 0 for v in rb.values()), pr_below_pe=sum(b is True for b in below),
               rebound_of=len(rb))
    mp = comp.get(KEEP, {}).get("matched_privacy", {})
    refs = mp.get("values", {})
    out["reference_levels"] = ", ".join(f"{x:.3f}" for x in mp.get("levels", [])) or "n/a"
    out["reference_clip"] = "; ".join(f"{k} {', '.join(num(v) for v in refs[k])}" for k in refs
                                      if k not in m["curves"]) or "n/a"
    out["curve_clip"] = "; ".join(f"{k} {', '.join(num(v) for v in refs[k])}" for k in refs if k in m["curves"]) \
        or "n/a"
    return out


def _pr_outcomes(c: dict) -> list:
    vs = c.get("vs", {})
    return [judge.both(*(judge.holds(vs[o][k], "lower") for o in vs)) for k in range(len(c.get("lambdas", [])))]


def _ss_outcomes(c: dict) -> list:
    vs = c.get("vs", {})
    return [judge.both(*(judge.holds(vs[o][k], "higher") for o in vs)) for k in range(len(c.get("lambdas", [])))]


def _half(c: dict) -> tuple:
    if c.get("test"):
        return judge.holds(c["test"], "higher"), None, None
    if c.get("reach"):   # never that private: does not hold once PRSS's best copy rate is distinguishably higher
        return (False if judge.holds(c["reach"], "higher") else None), None, None
    return None, None, None


# each paper comparison: (verdict, wins, losses) from its stored paired intervals
CHECKS = {
    "prss_above_pe_at_matched_privacy": lambda c: judge.count(
        [judge.holds(pd, "higher") for pd in c["matched_privacy"].get("paired", [])],
        min(3, c["matched_privacy"].get("n_levels", 4))),
    "prss_copies_less_at_matched_utility": lambda c: judge.count(
        [judge.holds(pd, "lower") for pd in c["matched_utility"].get("paired", [])],
        min(3, c["matched_utility"].get("n_levels", 4))),
    "prss_loses_at_most_half_of_pe_drop": lambda c: _half(c["half_drop"]),
    "pr_most_privacy": lambda c: judge.count(_pr_outcomes(c["pr_most_privacy"]),
                                             judge.majority(len(c["pr_most_privacy"].get("lambdas", [])))),
    "ss_best_utility": lambda c: judge.count(_ss_outcomes(c["ss_best_utility"]),
                                             judge.majority(len(c["ss_best_utility"].get("lambdas", [])))),
}
CHECK_TEXT = {
    "prss_above_pe_at_matched_privacy": "PRSS keeps more utility (every-phrasing CLIP) than PE at matched privacy "
                                        "(independent copy rate), at 3 of 4 levels",
    "prss_copies_less_at_matched_utility": "PRSS copies less than PE at matched utility, at 3 of 4 levels",
    "prss_loses_at_most_half_of_pe_drop": "at PE's most private point PRSS loses at most half of PE's utility drop",
    "pr_most_privacy": "PR alone has the lowest copy rate of PE, PR and SS at most lambda",
    "ss_best_utility": "SS alone has the highest every-phrasing CLIP of the four at most lambda",
}


def _paired_claims(prefix: str, label: str, p: dict | None, copies: bool) -> list[Claim]:
    v = (p or {}).get("vs_none", {})
    pix, cp = judge.direction(v.get("replication")), judge.direction(v.get("copy_rate"))
    hides = None if pix is None or cp is None else (
        True if pix == "lower" and cp != "lower" else False if cp == "lower" or pix == "higher" else None)
    measured = p is not None and copies and cp is not None
    ev = {k: v.get(k) for k in ("copy_rate", "replication", "nn_is_planted")}
    return [Claim(f"{prefix}_copy_falls", f"{label} lowers the independent copy rate against no mitigation",
                  verdict(judge.holds(v.get("copy_rate"), "lower"), measured=measured), ev),
            Claim(f"{prefix}_hides_from_pixel_criterion", f"{label}: pixel replication falls while the independent "
                  "copy rate does not", verdict(hides, measured=measured), ev)]


def claims(m: dict) -> list[Claim]:
    """The paper's claims as notebook 05 measured them (test half), per candidate source, judged by paired
    intervals; and, per method, whether it lowers the independent copy rate and whether it hides from the pixel
    criterion (pixel replication falls, the copy rate does not)."""
    none = m["rows"]["none"]
    copies = m["replication_rate_none"] > 0 or (m.get("copy_rate_none") or 0) > 0   # nothing to protect else
    verbatim_copies = none.get("replication_verbatim", 0) > VERBATIM_BAR
    out = []
    for prefix, curve in OPERATING.items():
        op, p = m["operating"].get(curve), m.get("points", {}).get(curve)
        held = (p or {}).get("vs_none", {}).get("heldout_clip_phrasings_relative")
        ok = None if op is None else judge.both(judge.within(op.get("verbatim_replication_ci95"), VERBATIM_BAR,
                                                             "at most"),
                                                judge.within((held or {}).get("ci95"), HELDOUT_BAR, "at least"))
        out.append(Claim(f"{prefix}_operating_bar", f"{curve} at its dev-chosen lambda leaves verbatim replication "
                         f"at most {VERBATIM_BAR:g} with held-out every-phrasing CLIP within {-HELDOUT_BAR:.0%} of CFG",
                         verdict(ok, measured=op is not None and held is not None and verbatim_copies),
                         {} if op is None else {"lambda": op["lambda"], "verbatim_replication_ci95":
                                                op["verbatim_replication_ci95"], "heldout_change": held}))
    for curve, (prefix, _) in POINTS.items():
        out += _paired_claims(prefix, curve, m.get("points", {}).get(curve), copies)
    for key, src in (("keep", KEEP), ("drop", DROP)):
        c = m.get("comparisons", {}).get(src)
        for name, check in CHECKS.items():
            holds, wins, losses = (None, 0, 0) if c is None else check(c)
            out.append(Claim(f"{key}_{name}", f"{CHECK_TEXT[name]} ({src})", verdict(holds, measured=c is not None
                                                                                       and copies),
                             {"wins": wins, "losses": losses}))
    rb = m["rebound"]
    below = [judge.holds(v.get("paired_late"), "lower") for v in rb.values()]
    holds, wins, losses = judge.count(below, judge.majority(len(rb)))
    out.append(Claim("reanchoring_keeps_magnitude_low", "PE's magnitude rebounds after the first step, "
                     "re-anchoring's second-half magnitude stays below PE's at most lambda",
                     verdict(holds, measured=copies and all(v.get("paired_late") for v in rb.values()) and bool(rb)),
                     {"pr_below_pe": wins, "pr_above_pe": losses, "of": len(rb)}))
    keep = cheap_check(m).get("verbatim", {}).get("keep_vs_original")
    out.append(Claim("keep_rewrites_stay_high", f"rewrites that keep a verbatim prompt's trigger stay within "
                     f"{-KEEP_BAR:.0%} of its first-step magnitude (paired relative change)",
                     verdict(judge.within((keep or {}).get("ci95"), KEEP_BAR, "at least"), measured=keep is not None),
                     {"keep_vs_original": keep}))
    s = m.get("seeds", {}).get(SEED_SHOWN, {})
    for prefix, label in SEED_ROWS.items():
        out += _paired_claims(f"seed{SEED_SHOWN}_{prefix}", f"seed {SEED_SHOWN}: {label}",
                              s.get("points", {}).get(label), copies)
    return out
