"""Notebook 06's report (IET-AGC, Liu et al., ECCV 2024; IET-AGC+, Guan et al., arXiv 2502.09434): the README's
headline rows, the tables and numbers of its results block, and the papers' claims as measured, all computed from
the metrics dict alone (so ``memlib results`` rebuilds them from a committed ``metrics.json``). The sentences live
in ``docs/templates/06_ietagc.md``."""
from __future__ import annotations

import math

from ..claims import Claim, verdict
from .frontier import frontier_mem_at

HEADLINES = [
    ("mem_reduction", "memorization score (IET-AGC's ratio under the threshold calibrated on real held-out digits), "
     "full IET-AGC+ against the baseline, relative reduction (digits, 2 seeds each)", ">= 0.40"),
    ("fd_change", "... Fréchet distance change (relative, positive is worse)", "<= 0.15"),
    ("below_frontier_share", "full-method runs below the baseline's memorization-fidelity frontier (share)", "1"),
]
# the bars of the headline claims (Liu et al.'s and Guan et al.'s reported drops at a small fidelity cost)
MEM_REDUCTION_BAR = 0.40
FD_CHANGE_BAR = 0.15
LABELS = {"baseline": "baseline", "iet": "IET", "agc": "IET+AGC", "msr": "IET+AGC+MSR",
          "full": "IET+AGC+MSR+TAA (full)", "long": "baseline, 2x visits",
          "bigbatch": "baseline, K x batch, steps / K"}


def _f(v, fmt=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _kind(run: str) -> str:
    return run.rsplit("-s", 1)[0]


def _first(m: dict, kind: str) -> str | None:
    return next((n for n in m["components"] if _kind(n) == kind), None)


def _table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] +
                     ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def run_rows(m: dict) -> list[dict]:
    """One row per run with its scalar scores (the CSV beside the figures)."""
    return [{"run": n, **{k: v for k, v in r.items() if not isinstance(v, (list, dict))}}
            for n, r in m["components"].items()]


def runs_table(m: dict) -> str:
    order = list(LABELS)
    c = dict(sorted(m["components"].items(), key=lambda kv: (order.index(_kind(kv[0])), kv[0])))
    return _table(["run", "memorization score [95 % CI]", "Gu replication", "planted replication", "Fréchet",
                   "probe visits", "TAA extra visits"],
                  [[f"{r['label']} (`{n}`)", f"{_f(r['mem_score'])} [{_f(r['mem_score_ci'][0])}, "
                    f"{_f(r['mem_score_ci'][1])}]", _f(r["gu_replication"]), _f(r["planted_replication"]),
                    _f(r["frechet"], ".2f"), r["probe_visits"], r["taa_visits"]] for n, r in c.items()])


def _frontier(m: dict) -> list[dict]:
    names = set(m["frontier"])
    return sorted((p for p in m["frontier_points"] if f"{p['run']}@{p['step']}" in names), key=lambda p: p["frechet"])


def frontier_table(m: dict) -> str:
    """Each IET run's final-round probe against the baseline's frontier at its Fréchet distance, and the control's
    last probe."""
    rows = [[f"`{n}` (final round)", _f(v["probe_mem_score"]), _f(v["frontier_mem_score"]),
             _f(v["probe_frechet"], ".2f"), "yes" if v["below"] else "no"] for n, v in m["frontier_test"].items()]
    if m.get("control_points") and "iet_vs_bigbatch" in m:
        p = m["control_points"][-1]
        rows.append([f"`{p['run']}` (control, last probe)", _f(p["mem_score"]),
                     _f(frontier_mem_at(p["frechet"], _frontier(m))), _f(p["frechet"], ".2f"),
                     "yes" if m["iet_vs_bigbatch"]["bigbatch_below_frontier"] else "no"])
    return _table(["run", "probe memorization score", "frontier there", "probe Fréchet", "below the frontier"], rows)


def steps_table(m: dict) -> str:
    return _table(["step (first seed)", "memorization score change", "Fréchet change"],
                  [[f"`{s['from']}` → `{s['to']}`", f"{s['mem_score_change']:+.3f}", f"{s['frechet_change']:+.2f}"]
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
                   "Fréchet distance"],
                  [["real held-out digits (never trained on)", _f(m["mem_score_heldout_real"]),
                    _f(m["mq_counts_heldout_real"]["0.333"] / m["n_heldout_real"]), ""],
                   ["real training digits (the Fréchet floor)", "", "", _f(m["frechet_floor"], ".2f")]])


def values(m: dict) -> dict:
    """The tables and derived numbers the page template and the notebook show, from the metrics alone."""
    later = [abs(s["mem_score_change"]) for s in m["component_steps"][1:]]
    return {"n_seeds": len(m["mem_score_full_seeds"]), "runs_table": runs_table(m),
            "frontier_table": frontier_table(m), "steps_table": steps_table(m),
            "max_later_step": max(later) if later else float("nan"), "skips_table": skips_table(m),
            "taa_table": taa_table(m), "premise_table": premise_table(last_premise(m)),
            "loss_threshold_table": loss_threshold_table(m), "references_table": references_table(m)}


def _lower(m: dict, a: str, b: str) -> bool | None:
    """Run b's memorization score against run a's: True when b's 95 % interval lies wholly below a's, False when
    wholly above, None when they overlap."""
    ca, cb = m["components"][a]["mem_score_ci"], m["components"][b]["mem_score_ci"]
    return True if cb[1] < ca[0] else False if cb[0] > ca[1] else None


def _all(tests: list[bool | None]) -> bool | None:
    """Every step holds: True; one goes the wrong way beyond its interval: False; else not distinguishable."""
    return False if False in tests else True if tests and all(tests) else None


def claims(m: dict) -> list[Claim]:
    """The papers' claims on the digits, each with the numbers behind its verdict."""
    steps = m["component_steps"]
    iet_step = next((s for s in steps if _kind(s["to"]) == "iet"), None)
    later = [s for s in steps if _kind(s["to"]) in ("agc", "msr", "full")]
    skips = m["skips"]
    premise = last_premise(m)
    ratios = [v["ratio"] for per in premise.values() for v in per.values()]
    ctl = m.get("iet_vs_bigbatch", {})
    iet_below = next((v["below"] for n, v in m["frontier_test"].items() if _kind(n) == "iet"), None)
    return [
        Claim("mem_reduction", f"the full IET-AGC+ lowers the memorization score by at least {MEM_REDUCTION_BAR:.0%}",
              verdict(m["mem_reduction"] >= MEM_REDUCTION_BAR, measured=math.isfinite(m["mem_reduction"])),
              {"mem_score_baseline": m["mem_score_baseline"], "mem_score_full": m["mem_score_full"],
               "mem_reduction": m["mem_reduction"]}),
        Claim("fidelity", f"the full IET-AGC+'s Fréchet distance is at most {FD_CHANGE_BAR:.0%} worse than the "
              "baseline's", verdict(m["fd_change"] <= FD_CHANGE_BAR),
              {"fd_baseline": m["fd_baseline"], "fd_full": m["fd_full"], "fd_change": m["fd_change"]}),
        Claim("frontier", "every full-method run lies below the baseline's memorization-fidelity frontier",
              verdict(m["below_frontier_share"] == 1.0), {"below_frontier_share": m["below_frontier_share"]}),
        Claim("iet", "IET alone (K proxies on shards, averaged every round) lowers the memorization score",
              verdict(_lower(m, iet_step["from"], iet_step["to"]) if iet_step else None, measured=iet_step is not None),
              {"mem_score_change": iet_step and iet_step["mem_score_change"],
               "iet_share_of_reduction": m.get("iet_share_of_reduction")}),
        Claim("components", "AGC, MSR and TAA each lower the memorization score further (95 % intervals apart)",
              verdict(_all([_lower(m, s["from"], s["to"]) for s in later]), measured=bool(later)),
              {f"{s['from']} -> {s['to']}": s["mem_score_change"] for s in later}),
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
