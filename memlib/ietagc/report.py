"""Notebook 06's report (IET-AGC, Liu et al., ECCV 2024; IET-AGC+, Guan et al., arXiv 2502.09434): the README's
headline rows, the tables and numbers of its results block, and the papers' claims as measured, all computed from
the metrics dict alone (so ``memlib results`` rebuilds them from a committed ``metrics.json``). The sentences live
in ``docs/templates/06_ietagc.md``."""
from __future__ import annotations

import math

from ..claims import Claim, verdict
from .frontier import frontier_mem_at
from .tables import LABELS, _ci, _f, _kind, _table, run_kind, underfit_table  # noqa: F401  (re-exported)

HEADLINES = [
    ("copy_rate_baseline", "digits samples the independent copy detector calls copies, baseline training (both "
     "training seeds pooled)", "none (reported as measured)"),
    ("copy_rate_full", "... full IET-AGC+ training", "none (reported as measured)"),
    ("copy_rate_change", "independent copy detector's copy rate, full IET-AGC+ minus the baseline (digits, paired "
     "over the same sample seeds, both training seeds pooled; the interval resamples samples, not training seeds)",
     "none (reported as measured)"),
    ("mem_reduction", "memorization score (IET-AGC's ratio under the threshold calibrated on real held-out digits), "
     "full IET-AGC+ against the baseline, relative reduction (digits, 2 seeds each)", ">= 0.40"),
    ("fd_change", "... Fréchet distance change (relative, positive is worse)", "<= 0.15"),
    ("below_frontier_share", "full-method runs below the baseline's memorization-fidelity frontier (share)", "1"),
]
# the bars of the headline claims (Liu et al.'s and Guan et al.'s reported drops at a small fidelity cost)
MEM_REDUCTION_BAR = 0.40
FD_CHANGE_BAR = 0.15
# the comparisons stored in metrics["paired"] (b minus a), in the order the paired table shows them
COMPARISONS = {"full_vs_baseline": "full IET-AGC+ − baseline (seeds pooled)", "iet_vs_baseline": "IET − baseline",
               "agc_vs_baseline": "IET+AGC − baseline", "msr_vs_baseline": "IET+AGC+MSR − baseline",
               "iet_vs_bigbatch": "IET − K x batch control"}


NAN = float("nan")
# the numbers the template reads that a run without the copy detector's columns lacks (shown as n/a)
NUMBERS = ("copy_rate_baseline", "copy_rate_full", "copy_rate_heldout_real", "nn_is_planted_baseline",
           "nn_is_planted_full", "nn_is_planted_heldout_real", "copy_rate_change", "copy_rate_reduction")


def _first(m: dict, kind: str) -> str | None:
    return next((n for n in m["components"] if _kind(n) == kind), None)


def run_rows(m: dict) -> list[dict]:
    """One row per run with its scalar scores (the CSV beside the figures)."""
    return [{"run": n, **{k: v for k, v in r.items() if not isinstance(v, (list, dict))}}
            for n, r in m["components"].items()]


def _diff(d: dict | None) -> str:
    """A paired difference as 'estimate [low, high]', signed."""
    return "n/a" if not d else _ci(d["estimate"], d["ci95"], "+.3f")


def runs_table(m: dict) -> str:
    """Every final model in the three privacy columns, then the real held-out digits' row (the floor of (a) and
    (b), the chance level of (c))."""
    order = list(LABELS)
    c = dict(sorted(m["components"].items(), key=lambda kv: (order.index(_kind(kv[0])), kv[0])))
    rows = [[f"{r['label']} (`{n}`)", _ci(r.get("copy_rate"), r.get("copy_rate_ci")),
             _ci(r["mem_score"], r["mem_score_ci"]), _f(r["gu_replication"]), _f(r.get("nn_is_planted")),
             _f(r["planted_replication"]), _f(r["frechet"], ".2f"), r["probe_visits"], r["taa_visits"]]
            for n, r in c.items()]
    rows.append(["real held-out digits (never trained on)",
                 _ci(m.get("copy_rate_heldout_real"), m.get("copy_rate_ci_heldout_real")),
                 _f(m["mem_score_heldout_real"]), _f(m.get("gu_replication_heldout_real")),
                 _f(m.get("nn_is_planted_heldout_real")), "", "", "", ""])
    return _table(["run", "(b) copy rate [95 % CI]", "(a) memorization score [95 % CI]", "(a) Gu replication",
                   "(c) nearest is planted", "planted replication", "Fréchet", "probe visits", "TAA extra visits"],
                  rows)


def paired_table(m: dict) -> str:
    """Each method minus the baseline (and IET minus the control) in every privacy column: paired over the same
    sample seeds, intervals resampling samples (not training seeds)."""
    pairs = m.get("paired", {})
    return _table(["b − a (same sample seeds)", "(b) copy rate", "(a) memorization score", "(a) Gu replication",
                   "(c) nearest is planted"],
                  [[label] + [_diff(pairs.get(k, {}).get(col)) for col in ("copy_rate", "mem_score",
                                                                            "gu_replication", "nn_is_planted")]
                   for k, label in COMPARISONS.items() if k in pairs or not pairs])


def _frontier(m: dict, names_key: str = "frontier", key: str = "mem_score") -> list[dict]:
    names = set(m.get(names_key, []))
    return sorted((p for p in m["frontier_points"] if f"{p['run']}@{p['step']}" in names and p.get(key) is not None),
                  key=lambda p: p["frechet"])


def frontier_table(m: dict) -> str:
    """Each IET run's final-round probe against the baseline's frontier at its Fréchet distance (memorization score
    and copy rate), and the control's last probe."""
    rows = [[f"`{n}` (final round)", _f(v["probe_mem_score"]), _f(v["frontier_mem_score"]), _yes(v["below"]),
             _f(v.get("probe_copy_rate")), _f(v.get("frontier_copy_rate")), _yes(v.get("below_copy")),
             _f(v["probe_frechet"], ".2f")] for n, v in m["frontier_test"].items()]
    if m.get("control_points") and "iet_vs_bigbatch" in m:
        p = m["control_points"][-1]
        copy_front = _frontier(m, "frontier_copy", "copy_rate")
        copy_at = frontier_mem_at(p["frechet"], copy_front, "copy_rate") \
            if copy_front and p.get("copy_rate") is not None else None
        rows.append([f"`{p['run']}` (control, last probe)", _f(p["mem_score"]),
                     _f(frontier_mem_at(p["frechet"], _frontier(m))),
                     _yes(m["iet_vs_bigbatch"]["bigbatch_below_frontier"]), _f(p.get("copy_rate")), _f(copy_at),
                     _yes(None if copy_at is None else p["copy_rate"] < copy_at), _f(p["frechet"], ".2f")])
    return _table(["run", "probe memorization score", "frontier there", "below it", "probe copy rate",
                   "copy-rate frontier there", "below it", "probe Fréchet"], rows)


def _yes(v) -> str:
    return "n/a" if v is None else "yes" if v else "no"


def steps_table(m: dict) -> str:
    """Each component's step (first seed): the change of the memorization score and of the copy rate with their
    paired intervals (same sample seeds), and of the Fréchet distance."""
    def change(s, key, column):
        d = s.get("paired", {}).get(column)
        return _diff(d) if d else (f"{s[key]:+.3f}" if key in s else "n/a")

    return _table(["step (first seed)", "memorization score change [paired 95 % CI]",
                   "copy rate change [paired 95 % CI]", "Fréchet change"],
                  [[f"`{s['from']}` → `{s['to']}`", change(s, "mem_score_change", "mem_score"),
                    change(s, "copy_rate_change", "copy_rate"), f"{s['frechet_change']:+.2f}"]
                   for s in m["component_steps"]])


def skips_table(m: dict) -> str:
    return _table(["run", "AGC skips", "share on planted rows", "skips per planted row", "skips per ordinary row"],
                  [[f"`{n}`", s["skips_total"], f"{s['skips_share_planted']:.0%}", f"{s['skips_per_planted_row']:.1f}",
                    f"{s['skips_per_ordinary_row']:.1f}"] for n, s in m["skips"].items()])


def taa_magnitude_above_zero(v: dict) -> int:
    """At most how many of a run's TAA steps had a RandAugment magnitude above 0: every such step has magnitude
    >= 1, and the proxies' mean magnitudes times their steps bound the sum."""
    per_proxy = v["extra_steps"] / max(len(v["mean_magnitude"]), 1)
    return int(round(sum(mg * per_proxy for mg in v["mean_magnitude"])))


def taa_table(m: dict) -> str:
    return _table(["run", "TAA extra steps", "extra visits", "at most this many with magnitude above 0"],
                  [[f"`{n}`", v["extra_steps"], v["extra_visits"], taa_magnitude_above_zero(v)]
                   for n, v in m["taa"].items()])


def premise_table(per_model: dict[str, dict]) -> str:
    """Planted / ordinary mean loss and the AUC of "lower loss = planted" per timestep, one row per model
    (``{model: {t: {"ratio", "auc"}}}``)."""
    ts = sorted({t for per in per_model.values() for t in per}, key=int)
    return _table(["model"] + [f"t = {t}: ratio, AUC" for t in ts],
                  [[name] + [f"{per[t]['ratio']:.2f}, {per[t]['auc']:.2f}" if t in per else "" for t in ts]
                   for name, per in per_model.items()])


def last_premise(m: dict) -> dict[str, dict]:
    """Each baseline's premise at its last checkpoint, labelled for ``premise_table``."""
    return {f"`{n}` at step {max(per, key=int)}": per[max(per, key=int)]
            for n, per in m["premise_during_training"].items()}


def loss_threshold_table(m: dict) -> str:
    return _table(["t", "skip threshold M[t]/r", "planted rows below", "ordinary rows below", "planted mean loss",
                   "ordinary mean loss"],
                  [[t, f"{v['threshold']['mean']:.4f}", f"{v['planted_below']:.0%}", f"{v['ordinary_below']:.0%}",
                    f"{v['planted_mean']:.4f}", f"{v['ordinary_mean']:.4f}"]
                   for t, v in m["loss_vs_threshold"].items()])


def references_table(m: dict) -> str:
    return _table(["reference", f"memorization score (ratio < {m['mem_threshold']:.3g})", "share under 1/3",
                   "copy rate", "nearest is planted", "Fréchet distance"],
                  [["real held-out digits (never trained on)", _f(m["mem_score_heldout_real"]),
                    _f(m["mq_counts_heldout_real"]["0.333"] / m["n_heldout_real"]),
                    _f(m.get("copy_rate_heldout_real")), _f(m.get("nn_is_planted_heldout_real")), ""],
                   ["real training digits (the Fréchet floor)", "", "", "", "", _f(m["frechet_floor"], ".2f")]])


def frontier_rows(m: dict) -> list[dict]:
    """Every probe of the frontier and of the control (its three privacy columns; the CSV beside the figures)."""
    return [{k: p.get(k) for k in ("run", "step", "visits", "copy_rate", "mem_score", "gu_replication",
                                   "nn_is_planted", "lowpass_replication", "frechet")}
            for p in m["frontier_points"] + m.get("control_points", [])]


def _detector(m: dict) -> dict:
    """What the copy detector was trained and calibrated on, for the template ('n/a' where not recorded)."""
    d = m.get("copy_detector") or {}

    def data(cfg):
        return ", ".join(f"{k}={v}" for k, v in sorted(cfg.items())) if cfg else "n/a"

    rates = d.get("false_copy_rates") or {}
    return {"detector_checkpoint": d.get("checkpoint", "n/a"), "detector_threshold": d.get("threshold", NAN),
            "detector_trained_on": data(d.get("trained_on_data")), "detector_runs_data": data(d.get("runs_data")),
            "detector_same_data": _yes(d.get("same_data")), "detector_max_false_rate": d.get("max_false_rate", NAN),
            "detector_false_dev": rates.get("dev", NAN), "detector_false_test": rates.get("test", NAN),
            "detector_heldout_seen": _f(d.get("heldout_seen_by_detector"), ".0%")}


def values(m: dict) -> dict:
    """The tables and derived numbers the page template and the notebook show, from the metrics alone."""
    later = [abs(s["mem_score_change"]) for s in m["component_steps"][1:]]
    full = m.get("paired", {}).get("full_vs_baseline", {})
    return {"n_seeds": len(m["mem_score_full_seeds"]), "runs_table": runs_table(m),
            "frontier_table": frontier_table(m), "steps_table": steps_table(m),
            "max_later_step": max(later) if later else float("nan"), "skips_table": skips_table(m),
            "taa_table": taa_table(m), "premise_table": premise_table(last_premise(m)),
            "loss_threshold_table": loss_threshold_table(m), "references_table": references_table(m),
            "paired_table": paired_table(m), "underfit_table": underfit_table(m), **_later_settings(m),
            **{k: m.get(k, NAN) for k in NUMBERS},
            "copy_rate_change_shown": _diff(full.get("copy_rate")), "mem_change_shown": _diff(full.get("mem_score")),
            "mem_reduction_ci_shown": _ci_only(m.get("mem_reduction_ci95"), ".0%"),
            "copy_rate_reduction_ci_shown": _ci_only(m.get("copy_rate_reduction_ci95"), ".0%"),
            "below_copy_frontier_share": _f(m.get("below_copy_frontier_share"), ".0%"), **_detector(m)}


def _later_settings(m: dict) -> dict:
    """The second setting's and the fine-tuning analogue's blocks, or a line saying they were not run."""
    from .finetune_study import finetune_table
    from .regime_report import regime_block

    r, f = m.get("regime"), m.get("finetune")
    return {"regime_block": regime_block(r) if r else "Not run in this regeneration (`regime = ''`).",
            "finetune_block": finetune_table(f) if f else "Not run in this regeneration (`finetune = False`)."}


def _ci_only(ci, fmt) -> str:
    return f"[{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]" if isinstance(ci, list) else "n/a"


def _lower(m: dict, a: str, b: str) -> bool | None:
    """Run b's memorization score against run a's, paired over the same sample seeds where the metrics hold the
    pair's interval: True when it lies below 0, False above, None when it holds 0. Without one (a run scored
    before the pairs were kept): b's own 95 % interval wholly below a's, wholly above, or overlapping."""
    pair = next((s["paired"]["mem_score"] for s in m["component_steps"]
                 if s["from"] == a and s["to"] == b and s.get("paired")), None)
    if pair is not None:
        return _side(pair)
    ca, cb = m["components"][a]["mem_score_ci"], m["components"][b]["mem_score_ci"]
    return True if cb[1] < ca[0] else False if cb[0] > ca[1] else None


def _side(d: dict) -> bool | None:
    """A paired difference b - a: True when its interval lies below 0, False above, None when it holds 0."""
    lo, hi = d["ci95"]
    return True if hi < 0 else False if lo > 0 else None


def _all(tests: list[bool | None]) -> bool | None:
    """Every step holds: True; one goes the wrong way beyond its interval: False; else not distinguishable."""
    return False if False in tests else True if tests and all(tests) else None


def _at_least(m: dict) -> bool | None:
    """The full method's memorization reduction against the bar: by its paired interval where the metrics hold
    one (True wholly at or above the bar, False wholly below, None across it), else by the estimate."""
    ci = m.get("mem_reduction_ci95")
    if isinstance(ci, list):
        return True if ci[0] >= MEM_REDUCTION_BAR else False if ci[1] < MEM_REDUCTION_BAR else None
    return m["mem_reduction"] >= MEM_REDUCTION_BAR


def _hides(m: dict, kind: str) -> Claim:
    """The papers' criterion falls for ``kind`` against the baseline (paired interval below 0) while the
    independent copy rate's does not: the method's drop would be hidden from, not seen by, the detector."""
    pair = m.get("paired", {}).get(f"{kind}_vs_baseline") or {}
    mem, copy = pair.get("mem_score"), pair.get("copy_rate")
    holds = None if mem is None or copy is None else _side(mem) is True and _side(copy) is not True
    label = {"iet": "IET", "agc": "IET+AGC", "msr": "IET+AGC+MSR", "full": "the full IET-AGC+"}[kind]
    return Claim(f"{kind}_hides_from_pixel_criterion",
                 f"{label}'s memorization score falls against the baseline (paired interval below 0) while the "
                 "independent copy rate's does not", verdict(holds, measured=holds is not None),
                 {"mem_score_change": mem, "copy_rate_change": copy})


def claims(m: dict) -> list[Claim]:
    """The papers' claims on the digits, each with the numbers behind its verdict, and where the papers'
    criterion and the independent copy detector disagree."""
    steps = m["component_steps"]
    iet_step = next((s for s in steps if _kind(s["to"]) == "iet"), None)
    later = [s for s in steps if _kind(s["to"]) in ("agc", "msr", "full")]
    skips = m["skips"]
    premise = last_premise(m)
    ratios = [v["ratio"] for per in premise.values() for v in per.values()]
    ctl = m.get("iet_vs_bigbatch", {})
    iet_below = next((v["below"] for n, v in m["frontier_test"].items() if _kind(n) == "iet"), None)
    copy = m.get("paired", {}).get("full_vs_baseline", {}).get("copy_rate")
    copy_share = m.get("below_copy_frontier_share")
    return [
        Claim("copy_rate", "the full IET-AGC+ lowers the independent copy detector's copy rate (paired over the "
              "same sample seeds)", verdict(_side(copy) if copy else None,
                                                          measured=copy is not None),
              {"copy_rate_baseline": m.get("copy_rate_baseline"), "copy_rate_full": m.get("copy_rate_full"),
               "copy_rate_change": copy, "copy_rate_heldout_real": m.get("copy_rate_heldout_real")}),
        Claim("mem_reduction", f"the full IET-AGC+ lowers the memorization score by at least {MEM_REDUCTION_BAR:.0%}",
              verdict(_at_least(m), measured=math.isfinite(m["mem_reduction"])),
              {"mem_score_baseline": m["mem_score_baseline"], "mem_score_full": m["mem_score_full"],
               "mem_reduction": m["mem_reduction"], "mem_reduction_ci95": m.get("mem_reduction_ci95")}),
        Claim("fidelity", f"the full IET-AGC+'s Fréchet distance is at most {FD_CHANGE_BAR:.0%} worse than the "
              "baseline's", verdict(m["fd_change"] <= FD_CHANGE_BAR),
              {"fd_baseline": m["fd_baseline"], "fd_full": m["fd_full"], "fd_change": m["fd_change"]}),
        Claim("frontier", "every full-method run lies below the baseline's memorization-fidelity frontier",
              verdict(m["below_frontier_share"] == 1.0), {"below_frontier_share": m["below_frontier_share"]}),
        Claim("frontier_copy", "every full-method run lies below the baseline's copy-rate-fidelity frontier",
              verdict(copy_share == 1.0, measured=copy_share is not None),
              {"below_copy_frontier_share": copy_share}),
        Claim("iet", "IET alone (K proxies on shards, averaged every round) lowers the memorization score",
              verdict(_lower(m, iet_step["from"], iet_step["to"]) if iet_step else None, measured=iet_step is not None),
              {"mem_score_change": iet_step and iet_step["mem_score_change"],
               "iet_share_of_reduction": m.get("iet_share_of_reduction")}),
        Claim("components", "AGC, MSR and TAA each lower the memorization score further (paired intervals below 0)",
              verdict(_all([_lower(m, s["from"], s["to"]) for s in later]), measured=bool(later)),
              {f"{s['from']} -> {s['to']}": s["mem_score_change"] for s in later}),
        *[_hides(m, kind) for kind in ("iet", "agc", "msr", "full")],
        Claim("agc_skips", "AGC skips planted (memorized) rows more often than ordinary rows",
              verdict(all(s["skips_per_planted_row"] > s["skips_per_ordinary_row"] for s in skips.values()),
                      measured=bool(skips)),
              {n: (s["skips_per_planted_row"], s["skips_per_ordinary_row"]) for n, s in skips.items()}),
        Claim("premise", "planted (memorized) rows have a lower loss than ordinary rows at every probed timestep "
              "(AGC's premise, each baseline's last checkpoint)",
              verdict(all(r < 1 for r in ratios), measured=bool(ratios)),
              {"largest_ratio": max(ratios, default=float("nan")),
               "smallest_auc": min((v["auc"] for per in premise.values() for v in per.values()),
                                   default=float("nan"))}),
        Claim("sharding", "IET lowers memorization by more than taking K times fewer sequential steps does (IET's "
              "last probe lies below the baseline's frontier, the K x batch control's does not)",
              verdict(bool(iet_below) and not ctl.get("bigbatch_below_frontier"),
                      measured=bool(ctl) and iet_below is not None),
              {**ctl, "iet_below_frontier": iet_below}),
    ]
