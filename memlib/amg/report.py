"""Notebook 04's report (Chen, Liu, Xu, CVPR 2024): the README rows, the tables and numbers of its results block,
and the paper's claims as measured, all from the metrics dict alone (``memlib results`` rebuilds them from the
committed ``figures/04_amg/metrics.json``). The block's sentences live in ``docs/templates/04_amg.md``.

Privacy is judged first by the independent copy detector (``memlib.copydetect``; no method run here optimises it
except the descriptor-sigma variant, whose own copy rate is marked gamed), beside the paper's pixel Gu ratio. Every
"lower", "costs" or "within" claim is decided by a paired interval over the same prompts and noises (stored in
the metrics by ``privacy.compare``): it holds only when the interval excludes zero on the claimed side, else it is
not distinguishable. A metrics file without those intervals gives "not measured"."""
from __future__ import annotations

import math

from ..claims import Claim, verdict
from ..paired_bootstrap import stored_direction
from ..mitigate.evalset import MEMORIZED_GROUPS
from .report_tables import (CODE_C1_ROW, DESCRIPTOR_ROW, NAN, OWN, ROW_ORDER, TRANSFER, WEN_PE_ROW,  # noqa: F401
                            change, digits_table, num, paired_table, seeds_table, testbed_table)

REPLICATION_BAR = 0.02   # Table 1: AMG leaves (almost) no memorized copies (the paper's pixel criterion)
CLIP_BAR = -0.05         # ... at a utility change of at most 5 %
DIGITS_BAR = 0.8         # Tables 2-3: relative Gu replication reduction on both digits models

HEADLINES = [
    ("copy_rate_none", "memorized test prompts the independent copy detector calls copies, no mitigation",
     "reported, no target"),
    ("copy_rate_amg", "... with AMG Main (c3 chosen on the dev half), a detector AMG does not see",
     "reported, no target"),
    ("replication_rate_none", "memorized test prompts that copy by the pixel Gu ratio (the paper's criterion), "
     "no mitigation", ">= 0.8"),
    ("replication_rate_amg", "... with AMG Main", f"<= {REPLICATION_BAR}"),
    ("clip_content_change_amg", "content-caption CLIP change on memorized prompts (relative)", f">= {CLIP_BAR}"),
    ("fd_heldout_change_amg", "held-out Fréchet distance change (relative)", "<= 0.15 or within floor"),
    ("switch_fired_heldout", "held-out test generations where AMG's switch fired", "<= 0.02"),
    ("evals_ratio_amg", "model evaluations per image, AMG Main / CFG", "<= 2"),
    ("digits_uncond_reduction", "digits, unconditional: Gu replication reduction", f">= {DIGITS_BAR}"),
    ("digits_class_reduction", "digits, class-conditional: Gu replication reduction", f">= {DIGITS_BAR}"),
]

# Table 1's methods (and Wen's PE beside them): does each lower the pixel criterion without the copy detector
# seeing fewer copies?
HIDES = {"amg_main": "AMG Main", "amg_strong": "AMG Strong", "amg_code_gating": "AMG, released-code gating",
         "amg_c1_13": CODE_C1_ROW, "wen_pe": WEN_PE_ROW}


def direction(p: dict | None) -> str | None:
    """'lower', 'higher' or 'not distinguishable' from a stored paired change; None when not measured."""
    return stored_direction(p)


def on_side(p: dict | None, claimed: str) -> str:
    """The verdict on "b is ``claimed`` than a" from a stored paired change."""
    d = direction(p)
    return verdict(None if d == "not distinguishable" else d == claimed, measured=d is not None)


def hides(pixel: dict | None, independent: dict | None) -> str:
    """The verdict on "the method lowers the pixel criterion while the independent one does not fall": the
    pixel change excludes zero downward and the independent change does not."""
    dp, di = direction(pixel), direction(independent)
    if dp is None or di is None:
        return verdict(None, measured=False)
    if dp == "not distinguishable":
        return verdict(None)
    return verdict(dp == "lower" and di != "lower")


def within(p: dict | None, bar: float) -> str:
    """The verdict on "a relative change no worse than ``bar``": its whole interval above the bar holds, its
    whole interval below the bar does not, an interval straddling it is not distinguishable."""
    if direction(p) is None:
        return verdict(None, measured=False)
    lo, hi = p["ci95"]
    return verdict(True if lo >= bar else False if hi < bar else None)


def _either_worse(privacy: dict | None, utility: dict | None) -> str:
    """Worse = more copies or less utility than Main, either interval excluding zero that way; better on one and
    worse on neither does not hold."""
    dc, du = direction(privacy), direction(utility)
    if dc is None or du is None:
        return verdict(None, measured=False)
    if dc == "higher" or du == "lower":
        return verdict(True)
    return verdict(False if (dc == "lower" or du == "higher") else None)


def weaker_groups(m: dict) -> dict[str, list[str]]:
    """Per single term: the memorized groups where its copy rate exceeds full AMG's (paired interval above 0)."""
    vs = m.get("paired_vs_main", {})
    return {t: [g for g in MEMORIZED_GROUPS if direction(vs.get(t, {}).get(f"copy_{g}")) == "higher"]
            for t in ("spe", "dup", "sim")}


def _single_terms(m: dict) -> str:
    vs = m.get("paired_vs_main", {})
    if any(direction(vs.get(t, {}).get("copy")) is None for t in ("spe", "dup", "sim")):
        return verdict(None, measured=False)
    weaker = weaker_groups(m)
    if all(weaker.values()):
        return verdict(True)
    return verdict(False if any(direction(vs[t]["copy"]) == "lower" for t in weaker) else None)


def _both_lower(*ps) -> str:
    ds = [direction(p) for p in ps]
    if any(d is None for d in ds):
        return verdict(None, measured=False)
    return verdict(True if all(d == "lower" for d in ds) else False if "higher" in ds else None)


def claims(m: dict) -> list[Claim]:
    """The paper's claims as notebook 04 measured them (test half; digits on test seeds)."""
    vn, vm = m.get("paired_vs_none", {}), m.get("paired_vs_main", {})
    main = vn.get("AMG Main", {})
    digits = {"unconditional": m["digits_uncond_reduction"], "class-conditional": m["digits_class_reduction"]}
    first = next(iter(m.get("seeds", {}).values()), {}).get("paired_vs_none", {})
    desc = vn.get(DESCRIPTOR_ROW, {})
    out = [
        Claim("removes_copies", f"AMG Main leaves at most {REPLICATION_BAR:g} of memorized generations copying by the "
              "pixel Gu ratio (Table 1)", verdict(m["replication_rate_amg"] <= REPLICATION_BAR,
                                                  # no verdict at the floor: without guidance nothing copies
                                                  measured=m["replication_rate_none"] > REPLICATION_BAR),
              {"replication_none": m["replication_rate_none"], "replication_amg": m["replication_rate_amg"],
               "replication_amg_ci95": m["replication_rate_amg_ci95"]}),
        Claim("lowers_copy_rate", "AMG Main lowers the independent copy detector's rate against no mitigation",
              on_side(main.get("copy"), "lower"), {"copy_rate_change": main.get("copy")}),
        Claim("keeps_utility", f"AMG Main keeps every-phrasing CLIP on memorized prompts within {-CLIP_BAR:.0%} of "
              "CFG (Table 1)", within(main.get("clip_phrasings_relative"), CLIP_BAR),
              {"relative_change": main.get("clip_phrasings_relative")}),
        Claim("always_on_costs_utility", "the switch always on costs held-out utility (Table 5)",
              on_side(vm.get("switch always on", {}).get("clip_phrasings_heldout"), "lower"),
              {"clip_phrasings_heldout_change": vm.get("switch always on", {}).get("clip_phrasings_heldout"),
               "fd_heldout": [m["rows"]["AMG Main"].get("frechet_heldout", NAN),
                              m["rows"]["switch always on"].get("frechet_heldout", NAN)]}),
        Claim("constant_threshold_worse", "a constant threshold does worse than the time-varying one: more copies "
              "or less utility (Table 5)", _either_worse(vm.get("constant threshold", {}).get("copy"),
                                                         vm.get("constant threshold", {}).get("clip_phrasings")),
              {k: vm.get("constant threshold", {}).get(k) for k in ("copy", "replication", "clip_phrasings")}),
        Claim("each_single_term_weaker", "each single term leaves more copies than full AMG on some group (Table 4)",
              _single_terms(m), {"groups_weaker": weaker_groups(m)}),
        Claim("descriptor_sigma_lowers_pixel_criteria", "AMG Main steered by the copy descriptor lowers the pixel "
              "and the low-pass Gu ratios it does not see", _both_lower(desc.get("replication"), desc.get("lowpass")),
              {k: desc.get(k) for k in ("replication", "lowpass", "copy")}),
        Claim("extra_seed_transfer_lowers_copy_rate", "seed 0's Main lowers the copy rate on a further testbed",
              on_side(first.get(TRANSFER, {}).get("copy"), "lower"), {"copy_rate_change": first.get(TRANSFER, {})
                                                                      .get("copy")}),
        Claim("extra_seed_own_lowers_copy_rate", "Main at a further testbed's own dev-chosen c3 lowers its copy rate",
              on_side(first.get(OWN, {}).get("copy"), "lower"), {"copy_rate_change": first.get(OWN, {}).get("copy")}),
        Claim("digits_removes_copies", f"on both digits DDPMs AMG lowers Gu replication by at least {DIGITS_BAR:.0%} "
              "(Tables 2-3)", verdict(all(r >= DIGITS_BAR for r in digits.values()),
                                      measured=all(math.isfinite(r) for r in digits.values())), digits),
    ]
    for key, label in HIDES.items():
        p = vn.get(label, {})
        out.append(Claim(f"{key}_hides_from_pixel_criterion", f"{label} lowers pixel Gu replication while the "
                         "independent copy rate does not fall", hides(p.get("replication"), p.get("copy")),
                         {"replication_change": p.get("replication"), "copy_rate_change": p.get("copy")}))
    for key, name in (("digits_uncond", "unconditional"), ("digits_class", "class-conditional")):
        p = m["digits"][name].get("paired_vs_none", {}).get("AMG Main", {})
        out.append(Claim(f"{key}_hides_from_pixel_criterion", f"on the {name} digits DDPM AMG Main lowers Gu "
                         "replication while the independent copy rate does not fall", hides(p.get("gu"), p.get("copy")),
                         {"gu_change": p.get("gu"), "copy_rate_change": p.get("copy")}))
    return out


def _digits_values(m: dict) -> dict:
    out = {}
    for prefix, name in (("digits_uncond", "unconditional"), ("digits_class", "class-conditional")):
        d = m["digits"][name]
        none, main = d["test"]["none"], d["test"]["AMG Main"]
        p = d.get("paired_vs_none", {}).get("AMG Main", {})
        out.update({f"{prefix}_gu_none": none["gu_replication"], f"{prefix}_gu_amg": main["gu_replication"],
                    f"{prefix}_copy_none": none.get("copy_rate", NAN), f"{prefix}_copy_amg": main.get("copy_rate", NAN),
                    f"{prefix}_copy_change": change(p.get("copy")), f"{prefix}_gu_change": change(p.get("gu")),
                    f"{prefix}_main_c3": d["main_c3"], f"{prefix}_frechet_none": none["frechet"],
                    f"{prefix}_frechet_amg": main["frechet"],
                    f"{prefix}_frechet_change": main["frechet"] - none["frechet"],
                    f"{prefix}_frechet_floor": none["frechet_floor"], f"{prefix}_fired_amg": main["fired_share"],
                    f"{prefix}_dev_fire_share": d["calibration"]["fire_share"]})
    first = next(iter(m["digits"].values()))
    out["digits_real_heldout_nl2_below_1_4"] = first["real_heldout_nl2_below_1_4"]
    out["digits_copy_detector"] = first.get("copy_detector") or "n/a"
    same = [d.get("detector_data_matches") for d in m["digits"].values()]
    out["digits_detector_same_data"] = "n/a" if None in same else "yes" if all(same) else "no"
    return out


def _matched_values(m: dict) -> dict:
    """Notebook 03's methods beside AMG Main: per curve its replication and copy rate at AMG Main's utility
    (matched utility) and its utility at AMG Main's replication and copy rate (matched privacy); a curve that does
    not reach the level is named with its range and its point nearest AMG Main."""
    mt = m.get("matched_to_03", {})
    if not mt.get("available"):   # notebook 03 ran other prompts or settings
        return {"matched_03_clip_level": NAN, "matched_03_replication": "n/a", "matched_03_amg_replication": NAN,
                "matched_03_clip": "n/a", "matched_03_commit": "n/a", "matched_03_utility": "n/a",
                "matched_03_copy": "n/a", "matched_03_amg_copy": NAN, "matched_03_clip_at_copy": "n/a"}
    methods = mt["methods"]

    def at_utility(y: str) -> str:
        parts = [f"{n} {v[y]:.3f}" for n, v in methods.items() if v.get(y) is not None]
        for n, v in methods.items():
            if v.get(y) is None and "clip_range" in v and (y != "copy_rate" or "copy_rate_range" in v):
                near = v.get("nearest")
                at = (f"; its nearest point, {near['knob']} = {near['value']:g}, copies {num(near.get(y))} at "
                      f"utility {near['clip_content']:.3f}") if near else ""
                lo, hi = v["clip_range"]
                parts.append(f"{n} outside its curve (utility {lo:.3f}–{hi:.3f}{at})")
        return ", ".join(parts) or "— (not measured in this run)"

    def at_privacy(y: str) -> str:
        key, rng = f"clip_at_amg_{y}", f"{y}_range"
        parts = [f"{n} {v[key]:.3f}" for n, v in methods.items() if v.get(key) is not None]
        parts += [f"{n} outside its curve ({y.replace('_', ' ')} {v[rng][0]:.3f}–{v[rng][1]:.3f})"
                  for n, v in methods.items() if v.get(key) is None and rng in v]
        return ", ".join(parts) or "— (not measured in this run)"

    return {"matched_03_clip_level": mt["clip_level"], "matched_03_utility": mt.get("utility", "clip_content")
            .replace("_", " "), "matched_03_replication": at_utility("replication"),
            "matched_03_copy": at_utility("copy_rate"), "matched_03_amg_replication": mt["amg"]["replication"],
            "matched_03_amg_copy": mt["amg"].get("copy_rate", NAN), "matched_03_clip": at_privacy("replication"),
            "matched_03_clip_at_copy": at_privacy("copy_rate"), "matched_03_commit": str(mt.get("commit"))[:10]}


def _privacy_values(m: dict) -> dict:
    """The paired changes and the descriptor-sigma and further-testbed numbers the template names."""
    vn, vm = m.get("paired_vs_none", {}), m.get("paired_vs_main", {})
    main, desc_row = vn.get("AMG Main", {}), m["rows"].get(DESCRIPTOR_ROW, {})
    d, dvp = vn.get(DESCRIPTOR_ROW, {}), m.get("descriptor_sigma", {}).get("paired_vs_pixel", {})
    pe, const, always = vm.get(WEN_PE_ROW, {}), vm.get("constant threshold", {}), vm.get("switch always on", {})
    seed, s = next(iter(m.get("seeds", {}).items()), ("n/a", {}))
    rows = s.get("rows", {})
    out = {f"main_{c}_change": change(main.get(k)) for c, k in (("copy", "copy"), ("replication", "replication"),
                                                                 ("lowpass", "lowpass"),
                                                                 ("phrasings", "clip_phrasings_relative"))}
    out.update({f"pe_vs_main_{c}": change(pe.get(k)) for c, k in (("copy", "copy"), ("replication", "replication"),
                                                                   ("phrasings", "clip_phrasings_relative"))})
    out.update({f"desc_vs_pixel_{c}": change(dvp.get(k)) for c, k in (("copy", "copy"), ("replication", "replication"),
                                                                       ("lowpass", "lowpass"),
                                                                       ("phrasings", "clip_phrasings_relative"))})
    out.update({f"descriptor_{c}_change": change(d.get(c)) for c in ("copy", "replication", "lowpass")})
    out.update({
        "constant_copy_change": change(const.get("copy")),
        "constant_replication_change": change(const.get("replication")),
        "constant_phrasings_change": change(const.get("clip_phrasings")),
        "always_phrasings_heldout_change": change(always.get("clip_phrasings_heldout")),
        "copy_rate_none": m.get("copy_rate_none", NAN), "copy_rate_amg": m.get("copy_rate_amg", NAN),
        "lowpass_replication_none": m.get("lowpass_replication_none", NAN),
        "lowpass_replication_amg": m.get("lowpass_replication_amg", NAN),
        "nn_is_planted_none": m["rows"]["none"].get("nn_is_planted_memorized", NAN),
        "nn_is_planted_amg": m["rows"]["AMG Main"].get("nn_is_planted_memorized", NAN),
        "nn_is_planted_chance": m.get("nn_is_planted_chance", NAN),
        "clip_phrasings_none": m.get("clip_phrasings_none", NAN),
        "clip_phrasings_amg": m.get("clip_phrasings_amg", NAN),
        "descriptor_c3": m.get("descriptor_sigma", {}).get("c3", NAN),
        "descriptor_copy": desc_row.get("copy_rate_memorized", NAN),
        "descriptor_replication": desc_row.get("replication_memorized", NAN),
        "descriptor_lowpass": desc_row.get("lowpass_replication_memorized", NAN),
        "descriptor_fired_heldout": m.get("descriptor_sigma", {}).get("switch_fired_heldout", NAN),
        "extra_seed": seed, "extra_seed_own_c3": s.get("own_c3", NAN),
        "extra_seed_chance": s.get("chance_nn_planted", NAN),
        **{f"extra_seed_copy_{k}": rows.get(label, {}).get("copy_rate_memorized", NAN)
           for k, label in (("none", "none"), ("transfer", TRANSFER), ("own", OWN))},
        **{f"extra_seed_replication_{k}": rows.get(label, {}).get("replication_memorized", NAN)
           for k, label in (("none", "none"), ("transfer", TRANSFER), ("own", OWN))},
    })
    return out


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/04_amg.md``), from metrics alone."""
    rows = m["rows"]
    always = rows["switch always on"]
    sweep = {sc: {r["value"]: r for r in rs} for sc, rs in m.get("dev_sweep", {}).items()}
    constant = sweep.get("constant", {}).get(m["main_c3"], {})
    main_dev = sweep.get(m["main_schedule"], {}).get(m["main_c3"], {})
    g1, yn = m.get("guidance_1", {}), m.get("y_n_rules", {})
    sib = m.get("siblings", {}).get("caption_dup", {})
    weaker = weaker_groups(m)
    return {
        "testbed_table": testbed_table(m), "paired_table": paired_table(m), "seeds_table": seeds_table(m),
        "digits_table": digits_table(m),
        "replication_bar": REPLICATION_BAR, "clip_bar": CLIP_BAR, "digits_bar": DIGITS_BAR,
        "clip_heldout_always_on": always["clip_content_heldout"],
        "fd_heldout_always_on": always.get("frechet_heldout", NAN),
        "fd_heldout_main": rows["AMG Main"].get("frechet_heldout", NAN),
        "single_terms_weaker": "; ".join(f"{t}: {', '.join(g) or 'none'}" for t, g in weaker.items())
        if m.get("paired_vs_main") else "n/a",
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
        **_privacy_values(m), **_matched_values(m), **_digits_values(m),
    }
