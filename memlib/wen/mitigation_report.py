"""Notebook 03's report (Wen et al., ICLR 2024, Sec. 4): the README rows, the tables and numbers of its results
block, and the paper's mitigation claims as measured, all from the metrics dict alone (``memlib results``
rebuilds them from the committed ``figures/03_mitigation/metrics.json``). The block's sentences live in
``docs/templates/03_mitigation.md``.

Privacy has three columns (``memlib.mitigate.columns``): (b) the independent copy detector's copy rate, the
headline, which no method here can see; (a) the paper's criterion, pixel Gu replication; (c) nearest-is-planted
beside its chance level (the content caption alone). Every comparison is a paired interval over the same prompts
and noises; a claim holds only when its interval excludes zero on the claimed side, and is "not distinguishable"
when it does not. A run without some part (an older metrics file, no filter, no second seed) reads n/a and
"not measured"."""
from __future__ import annotations

import math
import re

from ..claims import Claim, verdict
from ..mitigate.columns import PRIVACY_HEADER, privacy_cells
from ..mitigate.evalset import MEMORIZED_GROUPS
from ..paired_bootstrap import PairedDifference

PROBE_AUC_BAR = 0.95      # a training row's magnitude separates planted from ordinary rows (notebook 01's bar)
NAN = float("nan")

# The README's results table: (metric key, what it is, target)
HEADLINES = [
    ("copy_rate_none", "memorized test prompts the independent copy detector calls copies, no mitigation", "report"),
    ("pe_copy_rate", "... with Wen's PE at the l_target chosen on the dev half", "report"),
    ("replication_rate_none", "memorized test prompts that copy by the pixel Gu ratio (the paper's criterion), "
                              "no mitigation", "report"),
    ("pe_replication_rate", "... with PE", "report"),
    ("pe_clip_phrasings_cost", "every-phrasing CLIP lost by PE on memorized prompts", "report"),
    ("pe_untouched_bit_identical_share", "held-out prompts under l_target: images bit-identical to CFG", "1.0"),
    ("filter_unfiltered_copy_rate", "training-time filter: copy rate of the unfiltered run", "report"),
    ("filter_copy_rate", "... with the filter at the tau chosen on the dev half", "report"),
]

PRIVACY_COLUMNS = PRIVACY_HEADER.split(" | ")
METHOD_HEADER = ["method (test half)", *PRIVACY_COLUMNS, "pixel Gu: verbatim / image dup / caption dup",
                 "NCC to planted", "CLIP memorized: content / every phrasing", "CLIP held-out: content / every phrasing",
                 "held-out Fréchet (floor)", "evaluations per image", "acts on held-out"]
FILTER_HEADER = ["training-time filter (test half)", *PRIVACY_COLUMNS, "pixel Gu: verbatim / image dup / caption dup",
                 "CLIP held-out: content / every phrasing", "held-out Fréchet (floor)",
                 "dev half: pooled pixel Gu", "samples dropped", "planted rows among the drops"]
CHOSEN_HEADER = ["chosen point (test half)", "change of copy rate [paired 95 % CI]",
                 "change of pixel Gu replication [paired 95 % CI]", "change of nearest-is-planted [paired 95 % CI]",
                 "change of every-phrasing CLIP, memorized [paired 95 % CI]",
                 "change of every-phrasing CLIP, held-out [paired 95 % CI]", "hides from the pixel criterion"]
SEED_HEADER = ["testbed seed: method (test half)", *PRIVACY_COLUMNS, "CLIP memorized: content / every phrasing",
               "change of copy rate vs none [paired 95 % CI]", "change of pixel Gu vs none [paired 95 % CI]"]


def _number(v) -> float:
    return NAN if v is None else v


def _f(v, spec: str = ".3f") -> str:
    return "n/a" if not isinstance(v, (int, float)) or not math.isfinite(v) else format(v, spec)


def _ci(v, ci) -> str:
    return _f(v) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")


def _header(columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _not_measured(columns: list[str]) -> str:
    return "| not measured in this run | " + " | ".join(["n/a"] * (len(columns) - 1)) + " |"


def _privacy(r: dict, chance) -> str:
    return re.sub(r"\bnan\b", "n/a", privacy_cells(r, chance if isinstance(chance, (int, float)) else None))


def _pair(a, b) -> str:
    return f"{_f(a)} / {_f(b)}"


def change(d: dict | None, signed: bool = True) -> str:
    """A stored paired difference as 'estimate [lo, hi]' (n/a without one)."""
    if not d:
        return "n/a"
    spec = "+.3f" if signed else ".3f"
    return f"{_f(d['estimate'], spec)} [{_f(d['ci95'][0], spec)}, {_f(d['ci95'][1], spec)}]"


def paired_verdict(d: dict | None, claimed: str) -> str:
    """The verdict on "b is ``claimed`` ('lower' / 'higher') than a" from a stored ``PairedDifference.to_dict()``:
    holds only when the interval excludes zero on that side; not measured without one."""
    if not d or not d.get("n_units"):
        return verdict(None, measured=False)
    return PairedDifference(d["estimate"], tuple(d["ci95"]), d["n_prompts"], d["n_units"],
                            d.get("relative", False)).verdict(claimed)


def hides_verdict(p: dict | None) -> str:
    """Does a method lower the paper's pixel criterion while the independent copy rate does not fall? Holds when
    pixel replication's paired change excludes zero downward and the copy rate's does not; not distinguishable
    when the pixel change itself is not."""
    p = p or {}
    pixel, copy = paired_verdict(p.get("replication"), "lower"), paired_verdict(p.get("copy"), "lower")
    if "not measured" in (pixel, copy) or pixel != "holds":
        return pixel if pixel != "holds" else copy
    return verdict(copy != "holds")


def method_label(r: dict) -> str:
    return "no mitigation" if r["method"] == "none" else f"{r['method']} ({r['knob']} = {r['value']:g})"


def method_line(r: dict, chance=None, label: str | None = None) -> str:
    """One row of the mitigation table (metric rows as ``MethodRow.to_metrics`` stores them)."""
    groups = " / ".join(_f(r.get(f"replication_{g}"), ".2f") for g in MEMORIZED_GROUPS)
    acted = r.get("acted_heldout") if r.get("n_prompts_heldout") else None
    return (f"| {label or method_label(r)} | {_privacy(r, chance)} | {groups} | {_f(r.get('similarity_mean_memorized'))}"
            f" | {_pair(r.get('clip_content_memorized'), r.get('clip_phrasings_memorized'))}"
            f" | {_pair(r.get('clip_content_heldout'), r.get('clip_phrasings_heldout'))}"
            f" | {_f(r.get('frechet_heldout'))} ({_f(r.get('frechet_floor_heldout'))})"
            f" | {_f(r.get('evals_per_image'), '.0f')} | {_f(acted, '.2f')} |")


def shown_rows(m: dict) -> list[dict]:
    """No mitigation, PE's l_target sweep, then each baseline at its chosen value (its strongest knob value, the
    registry default)."""
    chosen = m.get("chosen_points", {})
    last: dict[str, dict] = {}
    for r in m["rows"]:
        if r["method"] not in ("none", "wen_pe"):
            if r["method"] not in chosen or chosen[r["method"]]["value"] == r["value"]:
                last[r["method"]] = r
    return [r for r in m["rows"] if r["method"] in ("none", "wen_pe")] + list(last.values())


def method_table(m: dict) -> str:
    """The mitigation table: no mitigation, the content caption alone (the chance reference), PE's sweep, then
    each baseline at its chosen value."""
    chance, rows = m.get("nn_planted_chance"), shown_rows(m)
    lines = [method_line(rows[0], chance)]
    if m.get("content_reference"):
        lines.append(method_line(m["content_reference"], chance, "content caption alone (chance reference)"))
    return "\n".join(_header(METHOD_HEADER) + lines + [method_line(r, chance) for r in rows[1:]])


def unfiltered_row(m: dict) -> dict | None:
    return next((r for r in m.get("filter_rows", []) if r["method"] == "unfiltered"), None)


def filtered_rows(m: dict) -> list[dict]:
    return [r for r in m.get("filter_rows", []) if r["method"] == "wen_filter"]


def filter_line(r: dict, m: dict) -> str:
    drops = m.get("filter_drops", {}).get(f"tau{r['value']:g}") if r["method"] == "wen_filter" else None
    percentile = {f"{t:g}": p for p, t in m.get("filter_taus", {}).items()}.get(f"{r['value']:g}")
    if r["method"] == "unfiltered":
        label = "unfiltered (shipped run)"
    else:
        notes = ([f"{percentile} of ordinary rows"] if percentile else []) + \
            (["dev choice"] if r["value"] == m.get("filter_chosen_tau") else [])
        label = f"tau = {r['value']:g}" + (f" ({'; '.join(notes)})" if notes else "")
    dev = next((d for d in m.get("filter_dev_rows", []) if d["method"] == r["method"] and d["value"] == r["value"]),
               {})
    groups = " / ".join(_f(r.get(f"replication_{g}"), ".2f") for g in MEMORIZED_GROUPS)
    return (f"| {label} | {_privacy(r, m.get('nn_planted_chance'))} | {groups}"
            f" | {_pair(r.get('clip_content_heldout'), r.get('clip_phrasings_heldout'))}"
            f" | {_f(r.get('frechet_heldout'))} ({_f(r.get('frechet_floor_heldout'))})"
            f" | {_f(dev.get('replication_memorized'))}"
            f" | {'—' if drops is None else format(drops['dropped_share'], '.0%')}"
            f" | {'—' if drops is None else format(drops['planted_share_of_drops'], '.0%')} |")


def filter_table(m: dict) -> str:
    """The unfiltered run, then the filter at each tau: the privacy columns, per-group replication, held-out
    utility, the dev-half replication tau is chosen on, and what it dropped."""
    return "\n".join(_header(FILTER_HEADER) + [filter_line(r, m) for r in m.get("filter_rows", [])])


def _chosen(m: dict) -> dict[str, dict]:
    """Each method's chosen point and its paired changes: PE and the baselines against no mitigation, the filter
    against the unfiltered run."""
    out = {k: dict(v) for k, v in m.get("chosen_points", {}).items()}
    if m.get("filter_chosen_tau") is not None:
        out["wen_filter"] = {"knob": "tau", "value": m["filter_chosen_tau"], "paired": m.get("filter_paired")}
    return out


def chosen_table(m: dict) -> str:
    lines = []
    for name, c in _chosen(m).items():
        p = c.get("paired") or {}
        against = "against the unfiltered run" if name == "wen_filter" else "against no mitigation"
        choice = "dev choice" if name in ("wen_pe", "wen_filter") else "registry default"
        lines.append(f"| {name} ({c['knob']} = {c['value']:g}, {choice}; {against}) | {change(p.get('copy'))} | "
                     f"{change(p.get('replication'))} | {change(p.get('nn_planted'))} | "
                     f"{change(p.get('clip_phrasings'))} | {change(p.get('clip_phrasings_heldout'))} | "
                     f"{hides_verdict(p)} |")
    return "\n".join(_header(CHOSEN_HEADER) + (lines or [_not_measured(CHOSEN_HEADER)]))


def _seed_line(label: str, r: dict, chance, p: dict | None) -> str:
    p = p or {}
    return (f"| {label} | {_privacy(r, chance)} | {_pair(r.get('clip_content_memorized'), r.get('clip_phrasings_memorized'))}"
            f" | {change(p.get('copy'))} | {change(p.get('replication'))} |")


def seed_table(m: dict) -> str:
    """Seed 0 (the main run) beside each further testbed seed: no mitigation, the content caption alone, PE at seed
    0's dev choice and at the seed's own, each baseline at its chosen value."""
    lines = []
    chance0, chosen = m.get("nn_planted_chance"), m.get("chosen_points", {})
    none0 = next((r for r in m["rows"] if r["method"] == "none"), None)
    if none0 is not None and m.get("seeds"):
        lines.append(_seed_line("seed 0: no mitigation", none0, chance0, None))
        for name, c in chosen.items():
            r = next((r for r in m["rows"] if r["method"] == name and r["value"] == c["value"]), None)
            if r is not None:
                lines.append(_seed_line(f"seed 0: {method_label(r)}", r, chance0, c.get("paired")))
    for s, sm in m.get("seeds", {}).items():
        chance = sm.get("nn_planted_chance")
        for role, r in sm["rows"].items():
            label = {"none": "no mitigation",
                     "pe_transfer": f"{method_label(r)}, seed 0's dev choice",
                     "pe_own": f"{method_label(r)}, this seed's dev choice"}.get(role, method_label(r))
            lines.append(_seed_line(f"seed {s}: {label}", r, chance, sm["paired"].get(role)))
        if sm.get("content_reference"):
            lines.append(_seed_line(f"seed {s}: content caption alone (chance reference)", sm["content_reference"],
                                    chance, None))
    return "\n".join(_header(SEED_HEADER) + (lines or [_not_measured(SEED_HEADER)]))


def probe_separating_timesteps(m: dict) -> list[int]:
    return [t for t, a in zip(m["probe_timesteps"], m["probe_auc"]) if a >= PROBE_AUC_BAR]


def _pe_paired(m: dict) -> dict:
    return (m.get("chosen_points", {}).get("wen_pe") or {}).get("paired") or {}


def _seed(m: dict, s: str) -> dict:
    return m.get("seeds", {}).get(s) or {}


def claims(m: dict) -> list[Claim]:
    """Wen et al.'s mitigation claims as notebook 03 measured them (test half; the probe on training rows)."""
    pe, fp = _pe_paired(m), m.get("filter_paired") or {}
    mp = m.get("matched_utility_phrasings") or {}
    auc = dict(zip(m["probe_timesteps"], m["probe_auc"]))
    copies = (m.get("copy_rate_none") or 0) > 0
    out = [
        Claim("pe_lowers_copy_rate", "PE at its dev-chosen l_target lowers the independent copy rate of memorized "
              "prompts (paired interval against no mitigation, test half)", paired_verdict(pe.get("copy"), "lower"),
              {"l_target": m.get("pe_operating_l_target"), "copy_rate_none": m.get("copy_rate_none"),
               "copy_rate_pe": m.get("pe_copy_rate"), "change": pe.get("copy")}),
        Claim("pe_lowers_replication", "PE at its dev-chosen l_target lowers pooled memorized pixel replication (the "
              "paper's criterion; paired interval against no mitigation, test half)",
              paired_verdict(pe.get("replication"), "lower"),
              {"replication_none": m["replication_rate_none"], "replication_pe": m.get("pe_replication_rate"),
               "change": pe.get("replication"), "relative_change": pe.get("replication_relative")}),
        Claim("pe_untouched_bit_identical", "Held-out prompts already under l_target are left alone: their images "
              "are bit-identical to plain CFG",
              verdict(m.get("pe_untouched_bit_identical_share") == 1.0, measured=bool(m.get("pe_n_untouched"))),
              {"n_untouched": m.get("pe_n_untouched"), "heldout_untouched_share": m.get("pe_heldout_untouched_share"),
               "bit_identical_share": m.get("pe_untouched_bit_identical_share")}),
        Claim("pe_below_random_token", "At matched every-phrasing CLIP, PE's copy rate is below random-token "
              "addition's (Fig. 4a: PE's curve lies below; paired interval over the matched levels)",
              # nothing to protect where nothing copies: the curves then differ by noise
              paired_verdict(mp.get("paired_copy"), "lower") if copies else verdict(None, measured=False),
              {"levels": mp.get("levels"), "copy_pe": mp.get("copy_pe"), "copy_random_token": mp.get("copy_random_token"),
               "change": mp.get("paired_copy"), "similarity_change": mp.get("paired_similarity")}),
        Claim("pe_costs_utility", "PE lowers every-phrasing CLIP on memorized prompts (a reviewer's caveat: "
              "inference-time mitigation costs alignment; paired interval)",
              paired_verdict(pe.get("clip_phrasings"), "lower"),
              {"change": pe.get("clip_phrasings"), "heldout_change": pe.get("clip_phrasings_heldout")}),
        Claim("filter_lowers_replication", "The training-time filter at its dev-chosen tau lowers pooled memorized "
              "pixel replication against the unfiltered run (paired interval, test half)",
              paired_verdict(fp.get("replication"), "lower"),
              {"tau": m.get("filter_chosen_tau"), "unfiltered": m.get("filter_unfiltered_replication_rate"),
               "filtered": m.get("filter_replication_rate"), "change": fp.get("replication"),
               **{f"change_{g}": fp.get(f"replication_{g}") for g in MEMORIZED_GROUPS}}),
        Claim("filter_lowers_copy_rate", "The training-time filter at its dev-chosen tau lowers the independent copy "
              "rate against the unfiltered run (paired interval, test half)", paired_verdict(fp.get("copy"), "lower"),
              {"tau": m.get("filter_chosen_tau"), "unfiltered": m.get("filter_unfiltered_copy_rate"),
               "filtered": m.get("filter_copy_rate"), "change": fp.get("copy")}),
        Claim("probe_separates", f"A training row's magnitude separates planted from ordinary rows at every probed "
              f"timestep (AUC at least {PROBE_AUC_BAR:g}), as a fixed tau over uniformly drawn t needs",
              verdict(bool(auc) and min(auc.values()) >= PROBE_AUC_BAR, measured=bool(auc)),
              {"auc_by_t": auc, "n_rows_per_side": m.get("probe_n_rows_per_side")}),
    ]
    chosen = _chosen(m)
    for name in dict.fromkeys(["wen_pe", *chosen, "wen_filter"]):
        against = "the unfiltered run" if name == "wen_filter" else "no mitigation"
        p = (chosen.get(name) or {}).get("paired")
        out.append(Claim(f"{name}_hides_from_pixel_criterion", f"{name} at its chosen point lowers pixel replication "
                         f"while the independent copy rate does not fall (paired intervals against {against})",
                         hides_verdict(p), {"value": (chosen.get(name) or {}).get("value"),
                                            "replication_change": (p or {}).get("replication"),
                                            "copy_change": (p or {}).get("copy")}))
    for s in dict.fromkeys(["1", *m.get("seeds", {})]):
        sm = _seed(m, s)
        for role, which in (("pe_transfer", "seed 0's dev-chosen l_target"), ("pe_own", "its own dev-chosen l_target")):
            p = (sm.get("paired") or {}).get(role) or {}
            out.append(Claim(f"seed{s}_{role}_lowers_copy_rate", f"On testbed seed {s}, PE at {which} lowers the "
                             f"independent copy rate (paired interval against no mitigation, test half)",
                             paired_verdict(p.get("copy"), "lower"),
                             {"l_target": sm.get("pe_transfer_l_target" if role == "pe_transfer"
                                                 else "pe_operating_l_target"), "change": p.get("copy")}))
    return out


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/03_mitigation.md``), from metrics
    alone; parts a run may lack are not a number (the page shows n/a)."""
    base = unfiltered_row(m) or {}
    drops = m.get("filter_drops", {})
    sep = probe_separating_timesteps(m)
    pe, fp, s1 = _pe_paired(m), m.get("filter_paired") or {}, _seed(m, "1")
    mp = m.get("matched_utility_phrasings") or {}
    out = {"method_table": method_table(m), "filter_table": filter_table(m), "chosen_table": chosen_table(m),
           "seed_table": seed_table(m), "probe_auc_bar": PROBE_AUC_BAR,
           "matched_levels": len(mp.get("levels") or []),
           "matched_content_levels": len(m.get("matched_utility", {}).get("levels", [])),
           "filter_unfiltered_verbatim": base.get("replication_verbatim", NAN),
           "planted_share_of_rows": next((d["planted_share_of_rows"] for d in drops.values()), NAN),
           "probe_auc_by_t": ", ".join(f"t={t}: {a:.2f}" for t, a in zip(m["probe_timesteps"], m["probe_auc"])),
           "probe_separating_t": ", ".join(str(t) for t in sep) or "none",
           "pe_copy_change": change(pe.get("copy")), "pe_replication_change": change(pe.get("replication")),
           "pe_replication_relative_change": change(pe.get("replication_relative")),
           "pe_clip_phrasings_change": change(pe.get("clip_phrasings")),
           "pe_heldout_clip_phrasings_change": change(pe.get("clip_phrasings_heldout")),
           "matched_copy_change": change(mp.get("paired_copy")),
           "filter_copy_change": change(fp.get("copy")), "filter_replication_change": change(fp.get("replication")),
           "filter_group_changes": ", ".join(f"{g} {change(fp.get(f'replication_{g}'))}" for g in MEMORIZED_GROUPS),
           "filter_heldout_clip_phrasings_change": change(fp.get("clip_phrasings_heldout")),
           "reduction_bar_complement": 1 - _number(m.get("pe_reduction_bar")),
           "seed1_l_target_own": _number(s1.get("pe_operating_l_target")),
           "seed1_l_target_transfer": _number(s1.get("pe_transfer_l_target"))}
    for key in ("pe_operating_l_target", "pe_replication_rate", "pe_replication_reduction", "pe_clip_content",
                "pe_n_untouched", "pe_heldout_untouched_share", "pe_untouched_bit_identical_share",
                "copy_rate_none", "pe_copy_rate", "nn_planted_chance", "clip_phrasings_none", "pe_clip_phrasings",
                "filter_chosen_tau", "filter_copy_rate", "filter_unfiltered_copy_rate", "filter_replication_rate",
                "filter_unfiltered_replication_rate", "pe_evals_per_image", "evals_per_image_none",
                "pe_vs_random_token_wins"):
        out[key] = _number(m.get(key))
    return out
