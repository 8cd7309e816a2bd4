"""Notebook 04's report (Chen, Liu, Xu, CVPR 2024): the README rows, the tables and numbers of its results block,
and the paper's claims as measured, all from the metrics dict alone (``memlib results`` rebuilds them from the
committed ``figures/04_amg/metrics.json``). The block's sentences live in ``docs/templates/04_amg.md``."""
from __future__ import annotations

import math

from ..claims import Claim, verdict
from ..mitigate.columns import markdown_row
from ..mitigate.evalset import MEMORIZED_GROUPS

REPLICATION_BAR = 0.02   # Table 1: AMG leaves (almost) no memorized copies
CLIP_BAR = -0.05         # ... at a content-CLIP change of at most 5 %
DIGITS_BAR = 0.8         # Tables 2-3: relative Gu replication reduction on both digits models

HEADLINES = [
    ("replication_rate_none", "memorized test prompts that copy (Gu), no mitigation", ">= 0.8"),
    ("replication_rate_amg", "... with AMG Main (c3 chosen on the dev half)", f"<= {REPLICATION_BAR}"),
    ("clip_content_change_amg", "content-caption CLIP change on memorized prompts (relative)", f">= {CLIP_BAR}"),
    ("fd_heldout_change_amg", "held-out Fréchet distance change (relative)", "<= 0.15 or within floor"),
    ("switch_fired_heldout", "held-out test generations where AMG's switch fired", "<= 0.02"),
    ("evals_ratio_amg", "model evaluations per image, AMG Main / CFG", "<= 2"),
    ("seconds_ratio_amg", "seconds per image, AMG Main / CFG", "<= 2"),
    ("digits_uncond_reduction", "digits, unconditional: Gu replication reduction", f">= {DIGITS_BAR}"),
    ("digits_class_reduction", "digits, class-conditional: Gu replication reduction", f">= {DIGITS_BAR}"),
]

# the testbed table's rows, in the order of the paper's tables (any other row follows)
CODE_C1_ROW = "AMG, released-code c1 = 13"   # Main with the released code's despecification scale
ROW_ORDER = ["none", "AMG Main", "AMG Strong", "AMG, released-code gating", CODE_C1_ROW, "spe", "dup", "sim",
             "spe+dup", "spe+sim", "dup+sim", "dup, y_N = top-k caption", "switch always on", "constant threshold"]
NAN = float("nan")


def ablation_tests(rows: dict[str, dict]) -> dict:
    """The paper's ablation claims (Tables 4-5) tested on the test-half rows (label -> metric row): the switch
    always on costs held-out utility; a constant threshold leaves more copies or less content; each single term
    leaves more replication than full AMG on some memorized group."""
    main, always, const = rows["AMG Main"], rows["switch always on"], rows["constant threshold"]
    rep = lambda row: row.get("replication_memorized", NAN)
    fd = lambda row: row.get("frechet_heldout", NAN)
    weaker = {t: [g for g in MEMORIZED_GROUPS if rows[t].get(f"replication_{g}", 0) > main.get(f"replication_{g}", 0)]
              for t in ("spe", "dup", "sim")}
    return {
        "always_on_costs_utility": {
            "holds": bool(always["clip_content_heldout"] < main["clip_content_heldout"] or fd(always) > fd(main)),
            "clip_heldout": [main["clip_content_heldout"], always["clip_content_heldout"]],
            "fd_heldout": [fd(main), fd(always)]},
        "constant_threshold_worse": {
            "holds": bool(rep(const) > rep(main) or const["clip_content_memorized"] < main["clip_content_memorized"]),
            "replication": [rep(main), rep(const)],
            "clip_memorized": [main["clip_content_memorized"], const["clip_content_memorized"]]},
        "each_single_term_weaker": {"holds": all(bool(v) for v in weaker.values()), "groups_weaker": weaker},
    }


def claims(m: dict) -> list[Claim]:
    """The paper's claims as notebook 04 measured them (test half; digits on test seeds)."""
    tests = ablation_tests(m["rows"])
    a, k, s = (tests[n] for n in ("always_on_costs_utility", "constant_threshold_worse", "each_single_term_weaker"))
    digits = {"unconditional": m["digits_uncond_reduction"], "class-conditional": m["digits_class_reduction"]}
    return [
        Claim("removes_copies", f"AMG Main leaves at most {REPLICATION_BAR:g} of memorized generations copying "
              "(Table 1)", verdict(m["replication_rate_amg"] <= REPLICATION_BAR,
                                   # no verdict at the floor: without guidance nothing copies above the bar
                                   measured=m["replication_rate_none"] > REPLICATION_BAR),
              {"replication_none": m["replication_rate_none"], "replication_amg": m["replication_rate_amg"],
               "replication_amg_ci95": m["replication_rate_amg_ci95"]}),
        Claim("keeps_utility", f"AMG Main keeps content CLIP on memorized prompts within {-CLIP_BAR:.0%} of CFG "
              "(Table 1)", verdict(m["clip_content_change_amg"] >= CLIP_BAR),
              {"clip_none": m["clip_score_none"], "clip_amg": m["clip_score_amg"],
               "relative_change": m["clip_content_change_amg"]}),
        Claim("always_on_costs_utility", "the switch always on costs held-out utility (Table 5)",
              verdict(a["holds"]), {k_: v for k_, v in a.items() if k_ != "holds"}),
        Claim("constant_threshold_worse", "a constant threshold does worse than the time-varying one (Table 5)",
              verdict(k["holds"]), {k_: v for k_, v in k.items() if k_ != "holds"}),
        Claim("each_single_term_weaker", "each single term leaves more copies than full AMG on some group (Table 4)",
              verdict(s["holds"]), {"groups_weaker": s["groups_weaker"]}),
        Claim("digits_removes_copies", f"on both digits DDPMs AMG lowers Gu replication by at least {DIGITS_BAR:.0%} "
              "(Tables 2-3)", verdict(all(r >= DIGITS_BAR for r in digits.values()),
                                      measured=all(math.isfinite(r) for r in digits.values())), digits),
    ]


def _row_line(label: str, r: dict) -> str:
    return markdown_row(label, r, f"{r['frechet_heldout']:.3f} ({r['frechet_floor_heldout']:.3f})")


def testbed_table(m: dict) -> str:
    """Tables 1, 4 and 5 on the testbed's test half, one row per run."""
    out = ["| AMG on the testbed (test half) | replication [95 % CI] | verbatim / image dup / caption dup | "
           "NCC to planted | content CLIP | held-out CLIP | held-out Fréchet (floor) | evaluations / ms per image |",
           "|---" * 8 + "|"]
    labels = [k for k in ROW_ORDER if k in m["rows"]] + [k for k in m["rows"] if k not in ROW_ORDER]
    return "\n".join(out + [_row_line(label, m["rows"][label]) for label in labels])


def digits_table(m: dict) -> str:
    """Tables 2-3 on the digits DDPMs (test seeds): no guidance, Main and Strong per model."""
    out = ["| digits (test seeds) | Gu replication [95 % CI] | planted copies | nL2 < 1.4 | nL2 5th pct | "
           "Fréchet (floor) | switch fired |", "|---" * 7 + "|"]
    for name, d in m["digits"].items():
        for label in ("none", "AMG Main", "AMG Strong"):
            r = d["test"][label]
            out.append(f"| {name}, {label} | {r['gu_replication']:.3f} [{r['gu_replication_ci'][0]:.3f}, "
                       f"{r['gu_replication_ci'][1]:.3f}] | {r['planted_replication']:.3f} | {r['nl2_below_1.4']:.3f} | "
                       f"{r['nl2_p5']:.2f} | {r['frechet']:.2f} ({r['frechet_floor']:.2f}) | {r['fired_share']:.2f} |")
    return "\n".join(out)


def _digits_values(m: dict) -> dict:
    out = {}
    for prefix, name in (("digits_uncond", "unconditional"), ("digits_class", "class-conditional")):
        d = m["digits"][name]
        none, main = d["test"]["none"], d["test"]["AMG Main"]
        out.update({f"{prefix}_gu_none": none["gu_replication"], f"{prefix}_gu_amg": main["gu_replication"],
                    f"{prefix}_main_c3": d["main_c3"], f"{prefix}_frechet_none": none["frechet"],
                    f"{prefix}_frechet_amg": main["frechet"],
                    f"{prefix}_frechet_change": main["frechet"] - none["frechet"],
                    f"{prefix}_frechet_floor": none["frechet_floor"], f"{prefix}_fired_amg": main["fired_share"],
                    f"{prefix}_dev_fire_share": d["calibration"]["fire_share"]})
    out["digits_real_heldout_nl2_below_1_4"] = next(iter(m["digits"].values()))["real_heldout_nl2_below_1_4"]
    return out


def _matched_values(m: dict) -> dict:
    """Notebook 03's methods beside AMG Main: 'method replication' per curve at AMG Main's content CLIP (matched
    utility), and 'method content CLIP' per curve at AMG Main's replication (matched privacy); a curve that does
    not reach the level is named with its range and its point nearest AMG Main."""
    mt = m.get("matched_to_03", {})
    if not mt.get("available"):   # notebook 03 ran other prompts or settings
        return {"matched_03_clip_level": NAN, "matched_03_replication": "n/a", "matched_03_amg_replication": NAN,
                "matched_03_clip": "n/a", "matched_03_commit": "n/a"}
    methods = mt["methods"]
    parts = [f"{n} {v['replication']:.3f}" for n, v in methods.items() if v["replication"] is not None]
    for n, v in methods.items():
        if v["replication"] is None and "clip_range" in v:
            near = v.get("nearest")
            at = (f"; its nearest point, {near['knob']} = {near['value']:g}, copies {near['replication']:.3f} at "
                  f"content CLIP {near['clip_content']:.3f}") if near else ""
            lo, hi = v["clip_range"]
            parts.append(f"{n} outside its curve (content CLIP {lo:.3f}–{hi:.3f}{at})")
    clips = [f"{n} {v['clip_at_amg_replication']:.3f}" for n, v in methods.items()
             if v.get("clip_at_amg_replication") is not None]
    clips += [f"{n} outside its curve (replication {v['replication_range'][0]:.3f}–{v['replication_range'][1]:.3f})"
              for n, v in methods.items() if v.get("clip_at_amg_replication") is None and "replication_range" in v]
    return {"matched_03_clip_level": mt["clip_level"], "matched_03_replication": ", ".join(parts) or "— (none "
            "reaches that utility)", "matched_03_amg_replication": mt["amg"]["replication"],
            "matched_03_clip": ", ".join(clips) or ("— (no curve reaches that replication)" if any(
                "replication_range" in v for v in methods.values()) else "— (not measured in this run)"),
            "matched_03_commit": str(mt.get("commit"))[:10]}


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/04_amg.md``), from metrics alone."""
    rows, tests = m["rows"], ablation_tests(m["rows"])
    always, const = rows["switch always on"], rows["constant threshold"]
    sweep = {sc: {r["value"]: r for r in rs} for sc, rs in m.get("dev_sweep", {}).items()}
    constant = sweep.get("constant", {}).get(m["main_c3"], {})
    main_dev = sweep.get(m["main_schedule"], {}).get(m["main_c3"], {})
    g1, yn = m.get("guidance_1", {}), m.get("y_n_rules", {})
    sib = m.get("siblings", {}).get("caption_dup", {})
    return {
        "testbed_table": testbed_table(m), "digits_table": digits_table(m),
        "replication_bar": REPLICATION_BAR, "clip_bar": CLIP_BAR, "digits_bar": DIGITS_BAR,
        "clip_heldout_always_on": always["clip_content_heldout"],
        "fd_heldout_always_on": always.get("frechet_heldout", NAN),
        "fd_heldout_main": rows["AMG Main"].get("frechet_heldout", NAN),
        "replication_constant": const["replication_memorized"],
        "replication_constant_ci95": const["replication_ci_memorized"],
        "clip_constant": const["clip_content_memorized"],
        "single_terms_weaker": "; ".join(f"{t}: {', '.join(g) or 'none'}"
                                         for t, g in tests["each_single_term_weaker"]["groups_weaker"].items()),
        "dev_constant_replication": constant.get("replication_memorized", NAN),
        "dev_constant_clip": constant.get("clip_content_memorized", NAN),
        "dev_main_schedule_clip": main_dev.get("clip_content_memorized", NAN),
        "guidance_1_verbatim": g1.get("replication_verbatim", NAN),
        "guidance_1_image_dup": g1.get("replication_image_dup", NAN),
        "guidance_1_caption_dup": g1.get("replication_caption_dup", NAN),
        "y_n_verbatim_nn_is_prompt": yn.get("verbatim", {}).get("nn_is_prompt", NAN),
        "y_n_verbatim_topk_is_bare_trigger": yn.get("verbatim", {}).get("topk_is_bare_trigger", NAN),
        "y_n_image_dup_topk_none": yn.get("image_dup", {}).get("topk_none", NAN),
        "caption_dup_nn_in_cluster": sib.get("nn_in_cluster", NAN),
        "caption_dup_moved_to_sibling": sib.get("moved_to_sibling", NAN),
        "caption_dup_sibling_ncc": sib.get("sibling_ncc", NAN),
        **_matched_values(m), **_digits_values(m),
    }
