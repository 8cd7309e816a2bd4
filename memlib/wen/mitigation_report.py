"""Notebook 03's report (Wen et al., ICLR 2024, Sec. 4): the README rows, the tables and numbers of its results
block, and the paper's mitigation claims as measured, all from the metrics dict alone (``memlib results``
rebuilds them from the committed ``figures/03_mitigation/metrics.json``). The block's sentences live in
``docs/templates/03_mitigation.md``."""
from __future__ import annotations

import math

from ..claims import Claim, verdict
from ..mitigate.columns import markdown_row

REDUCTION_BAR = 0.5      # PE at its dev-chosen l_target halves pooled memorized replication (test half)
MATCHED_WIN_SHARE = 0.75  # Fig. 4a: PE's curve below random-token addition's at 3 of 4 matched utility levels
PROBE_AUC_BAR = 0.95      # a training row's magnitude separates planted from ordinary rows (notebook 01's bar)
NAN = float("nan")

# The README's results table: (metric key, what it is, target)
HEADLINES = [
    ("replication_rate_none", "memorized test prompts that copy (Gu), no mitigation", "report"),
    ("pe_replication_rate", "... with Wen's PE at the l_target chosen on the dev half", "report"),
    ("pe_replication_reduction", "... relative reduction by PE (test half)", f">= {REDUCTION_BAR:.2f}"),
    ("pe_content_clip_cost", "content-caption CLIP lost by PE on memorized prompts", "report"),
    ("pe_untouched_bit_identical_share", "held-out prompts under l_target: images bit-identical to CFG", "1.0"),
    ("pe_vs_random_token_wins", "utility levels where PE is less similar than random tokens (of 4)", ">= 3"),
    ("filter_best_verbatim_replication", "training-time filter: verbatim replication, best tau", "report"),
    ("filter_unfiltered_verbatim_replication", "... unfiltered run, equal steps and seed", "report"),
]

METHOD_HEADER = ["method (test half)", "replication [95 % CI]", "verbatim / image dup / caption dup",
                 "NCC to planted", "content CLIP", "held-out CLIP", "held-out Fréchet (floor)",
                 "evaluations / ms per image", "acts on held-out"]
FILTER_HEADER = ["training-time filter (test half)", "verbatim replication [95 % CI]", "held-out CLIP [95 % CI]",
                 "held-out Fréchet [95 % CI]", "samples dropped", "planted rows among the drops"]


def _number(v) -> float:
    return NAN if v is None else v


def _ci(v: float, ci) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _header(columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def method_label(r: dict) -> str:
    return "no mitigation" if r["method"] == "none" else f"{r['method']} ({r['knob']} = {r['value']:g})"


def method_line(r: dict) -> str:
    """One method's row: the harness's shared columns, held-out Fréchet beside its floor, the held-out share acted
    on."""
    fd = f"{r['frechet_heldout']:.3f} ({r['frechet_floor_heldout']:.3f})"
    return markdown_row(method_label(r), r, fd) + f" {r['acted_heldout']:.2f} |"


def method_table(rows: list[dict]) -> str:
    """The mitigation table of ``rows`` (metric rows as ``MethodRow.to_metrics`` stores them)."""
    return "\n".join(_header(METHOD_HEADER) + [method_line(r) for r in rows])


def shown_rows(m: dict) -> list[dict]:
    """No mitigation, PE's l_target sweep, then each baseline at its strongest knob value (rows run weakest to
    strongest)."""
    strongest: dict[str, dict] = {}
    for r in m["rows"]:
        if r["method"] not in ("none", "wen_pe"):
            strongest[r["method"]] = r
    return [r for r in m["rows"] if r["method"] in ("none", "wen_pe")] + list(strongest.values())


def unfiltered_row(m: dict) -> dict | None:
    return next((r for r in m.get("filter_rows", []) if r["method"] == "unfiltered"), None)


def filtered_rows(m: dict) -> list[dict]:
    return [r for r in m.get("filter_rows", []) if r["method"] == "wen_filter"]


def filter_line(r: dict, drops: dict | None, percentile: str = "") -> str:
    label = "unfiltered (shipped run)" if r["method"] == "unfiltered" else f"tau = {r['value']:g}{percentile}"
    dropped = "—" if drops is None else f"{drops['dropped_share']:.0%}"
    planted = "—" if drops is None else f"{drops['planted_share_of_drops']:.0%}"
    return (f"| {label} | {_ci(r['replication_verbatim'], r.get('replication_ci_verbatim'))} | "
            f"{_ci(r['clip_content_heldout'], r.get('clip_content_ci_heldout'))} | "
            f"{_ci(r['frechet_heldout'], r.get('frechet_ci_heldout'))} | {dropped} | {planted} |")


def filter_table(m: dict) -> str:
    """The unfiltered run, then the filter at each tau: verbatim replication, held-out utility and what it
    dropped."""
    drops = m.get("filter_drops", {})
    percentile = {f"{t:g}": f" ({p} of ordinary rows)" for p, t in m.get("filter_taus", {}).items()}
    rows = [filter_line(r, drops.get(f"tau{r['value']:g}"), percentile.get(f"{r['value']:g}", ""))
            if r["method"] == "wen_filter" else filter_line(r, None) for r in m.get("filter_rows", [])]
    return "\n".join(_header(FILTER_HEADER) + rows)


def filter_lowers(m: dict) -> list[dict]:
    """The filtered runs whose verbatim-replication interval lies wholly below the unfiltered rate."""
    base = unfiltered_row(m)
    if base is None:
        return []
    return [r for r in filtered_rows(m) if r["replication_ci_verbatim"][1] < base["replication_verbatim"]]


def probe_separating_timesteps(m: dict) -> list[int]:
    return [t for t, a in zip(m["probe_timesteps"], m["probe_auc"]) if a >= PROBE_AUC_BAR]


def claims(m: dict) -> list[Claim]:
    """Wen et al.'s mitigation claims as notebook 03 measured them (test half; the probe on training rows)."""
    red, wins = m.get("pe_replication_reduction"), m.get("pe_vs_random_token_wins")
    levels = len(m.get("matched_utility", {}).get("levels", []))
    base, lower = unfiltered_row(m), filter_lowers(m)
    auc = dict(zip(m["probe_timesteps"], m["probe_auc"]))
    return [
        Claim("pe_halves_replication", f"PE at its dev-chosen l_target lowers pooled memorized replication by at "
              f"least {REDUCTION_BAR:.0%} (test half)",
              verdict(red is not None and red >= REDUCTION_BAR, measured=red is not None),
              {"l_target": m.get("pe_operating_l_target"), "replication_none": m["replication_rate_none"],
               "replication_pe": m.get("pe_replication_rate"), "replication_pe_ci95": m.get("pe_replication_rate_ci95"),
               "reduction": red, "bar": REDUCTION_BAR}),
        Claim("pe_untouched_bit_identical", "Held-out prompts already under l_target are left alone: their images "
              "are bit-identical to plain CFG",
              verdict(m.get("pe_untouched_bit_identical_share") == 1.0, measured=bool(m.get("pe_n_untouched"))),
              {"n_untouched": m.get("pe_n_untouched"), "heldout_untouched_share": m.get("pe_heldout_untouched_share"),
               "bit_identical_share": m.get("pe_untouched_bit_identical_share")}),
        Claim("pe_below_random_token", "At matched content CLIP, PE is less similar to the planted image than "
              "random-token addition (Fig. 4a: PE's curve lies below)",
              verdict(wins is not None and wins >= math.ceil(MATCHED_WIN_SHARE * levels),
                      # nothing to protect where nothing copies: the similarities then differ by noise
                      measured=wins is not None and levels > 0 and m["replication_rate_none"] > 0),
              {"wins": wins, "levels": levels, "bar": math.ceil(MATCHED_WIN_SHARE * levels)}),
        Claim("filter_lowers_replication", "The training-time filter lowers verbatim replication (at some tau, "
              "its interval below the unfiltered run)",
              verdict(bool(lower), measured=base is not None and bool(filtered_rows(m))
                      and base["replication_verbatim"] > 0),
              {"unfiltered": None if base is None else base["replication_verbatim"],
               "filtered": {f"{r['value']:g}": r["replication_verbatim"] for r in filtered_rows(m)},
               "lower_at_tau": [r["value"] for r in lower]}),
        Claim("probe_separates", f"A training row's magnitude separates planted from ordinary rows at every probed "
              f"timestep (AUC at least {PROBE_AUC_BAR:g}), as a fixed tau over uniformly drawn t needs",
              verdict(bool(auc) and min(auc.values()) >= PROBE_AUC_BAR, measured=bool(auc)),
              {"auc_by_t": auc, "n_rows_per_side": m.get("probe_n_rows_per_side")}),
    ]


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/03_mitigation.md``), from metrics
    alone; parts a run may lack are not a number (the page shows n/a)."""
    base = unfiltered_row(m) or {}
    drops = m.get("filter_drops", {})
    sep = probe_separating_timesteps(m)
    out = {"method_table": method_table(shown_rows(m)), "filter_table": filter_table(m),
           "reduction_bar": REDUCTION_BAR, "probe_auc_bar": PROBE_AUC_BAR,
           "matched_levels": len(m.get("matched_utility", {}).get("levels", [])),
           "filter_unfiltered_verbatim": base.get("replication_verbatim", NAN),
           "filter_lower_taus": ", ".join(format(r["value"], "g") for r in filter_lowers(m)) or "none",
           "planted_share_of_rows": next((d["planted_share_of_rows"] for d in drops.values()), NAN),
           "probe_auc_by_t": ", ".join(f"t={t}: {a:.2f}" for t, a in zip(m["probe_timesteps"], m["probe_auc"])),
           "probe_separating_t": ", ".join(str(t) for t in sep) or "none"}
    for key in ("pe_operating_l_target", "pe_replication_rate", "pe_replication_reduction", "pe_clip_content",
                "pe_n_untouched", "pe_heldout_untouched_share", "pe_untouched_bit_identical_share",
                "pe_vs_random_token_wins"):
        out[key] = _number(m.get(key))
    return out
