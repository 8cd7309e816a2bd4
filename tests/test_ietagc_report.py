"""Notebook 06's report: the papers' claims and the block's tables, from a metrics dict alone."""
import copy

import pytest

from memlib.ietagc import report


def _run(label, mem, ci, frechet=4.0, visits=100, taa=0):
    return {"label": label, "mem_score": mem, "mem_score_ci": ci, "gu_replication": mem / 2,
            "planted_replication": mem / 2, "frechet": frechet, "probe_visits": visits, "taa_visits": taa,
            "mq_counts": {"0.333": 3}}


def _metrics() -> dict:
    """A small run where every claim holds except the components' (their intervals overlap)."""
    comps = {"baseline-s0": _run("baseline", 0.20, [0.18, 0.22], 4.0),
             "iet-s0": _run("IET", 0.010, [0.005, 0.015], 4.1),
             "agc-s0": _run("IET+AGC", 0.008, [0.004, 0.012], 4.1),
             "msr-s0": _run("IET+AGC+MSR", 0.008, [0.004, 0.012], 4.0),
             "full-s0": _run("IET+AGC+MSR+TAA (full)", 0.009, [0.005, 0.013], 4.1, taa=64),
             "bigbatch-s0": _run("baseline, K x batch, steps / K", 0.05, [0.04, 0.06], 4.6)}
    order = ["baseline-s0", "iet-s0", "agc-s0", "msr-s0", "full-s0"]
    steps = [{"from": a, "to": b, "mem_score_change": comps[b]["mem_score"] - comps[a]["mem_score"],
              "frechet_change": comps[b]["frechet"] - comps[a]["frechet"]} for a, b in zip(order, order[1:])]
    front = [{"run": "baseline-s0", "step": s, "visits": s, "mem_score": m, "frechet": f, "gu_replication": 0}
             for s, m, f in ((10, 0.0, 9.0), (20, 0.1, 5.0), (30, 0.2, 4.0))]
    below = {n: {"probe_mem_score": 0.01, "probe_frechet": 4.2, "frontier_mem_score": 0.18, "below": True}
             for n in order[1:]}
    return {"mem_score_baseline": 0.20, "mem_score_full": 0.009, "mem_score_full_seeds": [0.009],
            "mem_reduction": 1 - 0.009 / 0.20, "fd_baseline": 4.0, "fd_full": 4.1, "fd_change": 0.025,
            "mem_threshold": 0.15, "mem_score_heldout_real": 0.03, "mq_counts_heldout_real": {"0.333": 40},
            "n_heldout_real": 100, "frechet_floor": 1.9, "components": comps, "component_steps": steps,
            "iet_share_of_reduction": 0.19 / 0.191, "below_frontier_share": 1.0, "frontier_points": front,
            "frontier": [f"baseline-s0@{s}" for s in (30, 20, 10)], "frontier_test": below,
            "control_points": [{"run": "bigbatch-s0", "step": 5, "visits": 100, "mem_score": 0.2, "frechet": 4.6,
                                "gu_replication": 0}],
            "iet_vs_bigbatch": {"iet_mem_score": 0.01, "bigbatch_mem_score": 0.05, "iet_frechet": 4.1,
                                "bigbatch_frechet": 4.6, "bigbatch_below_frontier": False},
            "skips": {"agc-s0": {"skips_total": 30, "skips_per_planted_row": 2.0, "skips_per_ordinary_row": 1.0,
                                 "skips_share_planted": 0.4}},
            "taa": {"full-s0": {"extra_steps": 40, "extra_visits": 640, "mean_magnitude": [0.05, 0.0]}},
            "premise_during_training": {"baseline-s0": {"10": {"50": {"ratio": 1.2, "auc": 0.4}},
                                                        "30": {"50": {"ratio": 0.3, "auc": 0.95},
                                                               "850": {"ratio": 0.9, "auc": 0.6}}}},
            "loss_vs_threshold": {"50": {"threshold": {"mean": 0.01}, "planted_below": 0.5, "ordinary_below": 0.1,
                                         "planted_mean": 0.02, "ordinary_mean": 0.05}}}


def _verdicts(m: dict) -> dict:
    return {c.name: c.verdict for c in report.claims(m)}


def test_claims_follow_the_numbers():
    m = _metrics()
    assert _verdicts(m) == {"mem_reduction": "holds", "fidelity": "holds", "frontier": "holds", "iet": "holds",
                            "components": "not distinguishable", "agc_skips": "holds", "premise": "holds",
                            "sharding": "holds"}
    flipped = copy.deepcopy(m)
    flipped["mem_reduction"], flipped["fd_change"], flipped["below_frontier_share"] = 0.3, 0.2, 0.5
    flipped["components"]["iet-s0"]["mem_score_ci"] = [0.17, 0.25]              # IET's interval meets the baseline's
    flipped["components"]["full-s0"]["mem_score_ci"] = [0.02, 0.03]             # TAA raises it, intervals apart
    flipped["skips"]["agc-s0"]["skips_per_planted_row"] = 0.5
    flipped["premise_during_training"]["baseline-s0"]["30"]["850"]["ratio"] = 1.1
    flipped["iet_vs_bigbatch"]["bigbatch_below_frontier"] = True
    assert _verdicts(flipped) == {"mem_reduction": "does not hold", "fidelity": "does not hold",
                                  "frontier": "does not hold", "iet": "not distinguishable",
                                  "components": "does not hold", "agc_skips": "does not hold",
                                  "premise": "does not hold", "sharding": "does not hold"}
    m["components"]["agc-s0"]["mem_score_ci"] = [0.002, 0.003]                 # every later step lower, apart
    m["components"]["msr-s0"]["mem_score_ci"] = [0.0005, 0.001]
    m["components"]["full-s0"]["mem_score_ci"] = [0.0, 0.0]
    assert _verdicts(m)["components"] == "holds"
    m["components"]["msr-s0"]["mem_score_ci"] = [0.001, 0.0025]                # lower, but the intervals overlap
    assert _verdicts(m)["components"] == "not distinguishable"
    m["mem_reduction"] = float("nan")                                            # a baseline that never copies
    del m["iet_vs_bigbatch"]
    assert _verdicts(m)["mem_reduction"] == "not measured" and _verdicts(m)["sharding"] == "not measured"


def test_values_are_tables_and_numbers_from_the_metrics():
    m = _metrics()
    v = report.values(m)
    assert v["n_seeds"] == 1 and v["max_later_step"] == pytest.approx(0.002)
    runs = v["runs_table"].splitlines()
    assert runs[2].startswith("| baseline (`baseline-s0`) | 0.200 [0.180, 0.220] |")
    assert runs[-1].startswith("| baseline, K x batch, steps / K (`bigbatch-s0`)") and len(runs) == 2 + 6
    control = v["frontier_table"].splitlines()[-1]
    assert control == "| `bigbatch-s0` (control, last probe) | 0.200 | 0.140 | 4.60 | no |"   # between 4 and 5
    assert "| `full-s0` | 40 | 640 | 1 |" in v["taa_table"]       # 20 steps a proxy x 0.05: at most 1 above 0
    assert "| `baseline-s0` at step 30 | 0.30, 0.95 | 0.90, 0.60 |" in v["premise_table"]
    assert "| `agc-s0` | 30 | 40% | 2.0 | 1.0 |" in v["skips_table"]
    assert report.run_rows(m)[0] == {"run": "baseline-s0", "label": "baseline", "mem_score": 0.20,
                                     "gu_replication": 0.10, "planted_replication": 0.10, "frechet": 4.0,
                                     "probe_visits": 100, "taa_visits": 0}


def test_the_template_renders_the_committed_metrics():
    from memlib.harness.report import paper_block

    text = paper_block("06_ietagc")
    assert "{" not in text and "not yet run" not in text
    assert "| IET+AGC+MSR+TAA (full) (`full-s0`) |" in text and "**IET alone gives" in text
    verdicts = sum(text.count(f"**{v}**") for v in ("holds", "does not hold", "not distinguishable", "not measured"))
    assert verdicts == len(report.claims(_metrics()))           # every claim's verdict, once
