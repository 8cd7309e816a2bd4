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


def _pair(lo, hi, n=2000):
    return {"estimate": (lo + hi) / 2, "ci95": [lo, hi], "n_prompts": n, "n_units": n, "relative": False}


def _with_privacy(m: dict) -> dict:
    """The same run scored in the three privacy columns, with paired differences: the copy rate falls with the
    memorization score for IET and the full method, but not for +AGC and +MSR (they hide from the criterion)."""
    m = copy.deepcopy(m)
    for n, r in m["components"].items():
        r.update(copy_rate=r["mem_score"] / 2, copy_rate_ci=[0.0, r["mem_score"]], nn_is_planted=r["mem_score"] * 1.5,
                 lowpass_replication=0.0)
    pairs = {"full_vs_baseline": {"copy_rate": _pair(-0.12, -0.06), "mem_score": _pair(-0.21, -0.17),
                                  "gu_replication": _pair(-0.1, -0.05), "nn_is_planted": _pair(-0.2, -0.1)},
             "iet_vs_baseline": {"copy_rate": _pair(-0.1, -0.05), "mem_score": _pair(-0.2, -0.18),
                                 "gu_replication": _pair(-0.1, -0.05), "nn_is_planted": _pair(-0.2, -0.1)},
             "agc_vs_baseline": {"copy_rate": _pair(-0.02, 0.01), "mem_score": _pair(-0.2, -0.18),
                                 "gu_replication": _pair(-0.1, -0.05), "nn_is_planted": _pair(-0.2, -0.1)},
             "msr_vs_baseline": {"copy_rate": _pair(0.01, 0.03), "mem_score": _pair(-0.2, -0.18),
                                 "gu_replication": _pair(-0.1, -0.05), "nn_is_planted": _pair(-0.2, -0.1)}}
    for i, s in enumerate(m["component_steps"]):    # every later step lower, paired (the runs' own CIs overlap)
        mem = _pair(s["mem_score_change"] - 0.004, s["mem_score_change"] + 0.004) if i == 0 else _pair(-0.004, -0.001)
        s["paired"] = {"mem_score": mem, "copy_rate": _pair(-0.01, 0.01), "gu_replication": None,
                       "nn_is_planted": None}
        s["copy_rate_change"] = 0.0
    m.update(paired=pairs, copy_rate_baseline=0.1, copy_rate_full=0.01, copy_rate_change=-0.09,
             copy_rate_change_ci95=[-0.12, -0.06], copy_rate_reduction=0.9, copy_rate_reduction_ci95=[0.8, 0.95],
             mem_reduction_ci95=[0.9, 0.99], copy_rate_heldout_real=0.05, copy_rate_ci_heldout_real=[0.02, 0.08],
             nn_is_planted_heldout_real=0.013, gu_replication_heldout_real=0.0, nn_is_planted_baseline=0.3,
             nn_is_planted_full=0.05, below_copy_frontier_share=1.0,
             copy_detector={"checkpoint": "copydetect-digits-x", "threshold": 0.9, "max_false_rate": 0.05,
                            "false_copy_rates": {"dev": 0.044, "test": 0.059}, "same_data": True,
                            "heldout_seen_by_detector": 0.0, "trained_on_data": {"copies": 30, "n_duplicated": 20},
                            "runs_data": {"copies": 30, "n_duplicated": 20}})
    for p in m["frontier_points"] + m["control_points"]:
        p.update(copy_rate=p["mem_score"] / 2, nn_is_planted=0.1, lowpass_replication=0.0)
    m["frontier_copy"] = list(m["frontier"])
    for v in m["frontier_test"].values():
        v.update(probe_copy_rate=0.004, frontier_copy_rate=0.09, below_copy=True)
    return m


def _verdicts(m: dict) -> dict:
    return {c.name: c.verdict for c in report.claims(m)}


PRIVACY_CLAIMS = ("copy_rate", "frontier_copy", "iet_hides_from_pixel_criterion", "agc_hides_from_pixel_criterion",
                  "msr_hides_from_pixel_criterion", "full_hides_from_pixel_criterion")


def test_claims_follow_the_numbers():
    m = _metrics()
    assert _verdicts(m) == {"mem_reduction": "holds", "fidelity": "holds", "frontier": "holds", "iet": "holds",
                            "components": "not distinguishable", "agc_skips": "holds", "premise": "holds",
                            "sharding": "holds", **{k: "not measured" for k in PRIVACY_CLAIMS}}
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
                                  "premise": "does not hold", "sharding": "does not hold",
                                  **{k: "not measured" for k in PRIVACY_CLAIMS}}
    m["components"]["agc-s0"]["mem_score_ci"] = [0.002, 0.003]                 # every later step lower, apart
    m["components"]["msr-s0"]["mem_score_ci"] = [0.0005, 0.001]
    m["components"]["full-s0"]["mem_score_ci"] = [0.0, 0.0]
    assert _verdicts(m)["components"] == "holds"
    m["components"]["msr-s0"]["mem_score_ci"] = [0.001, 0.0025]                # lower, but the intervals overlap
    assert _verdicts(m)["components"] == "not distinguishable"
    m["mem_reduction"] = float("nan")                                            # a baseline that never copies
    del m["iet_vs_bigbatch"]
    assert _verdicts(m)["mem_reduction"] == "not measured" and _verdicts(m)["sharding"] == "not measured"


def test_paired_intervals_decide_the_claims_and_show_where_the_criterion_and_the_detector_disagree():
    m = _with_privacy(_metrics())
    v = _verdicts(m)
    assert v["copy_rate"] == "holds" and v["frontier_copy"] == "holds" and v["mem_reduction"] == "holds"
    assert v["iet_hides_from_pixel_criterion"] == "does not hold"          # both columns fall
    assert v["full_hides_from_pixel_criterion"] == "does not hold"
    assert v["agc_hides_from_pixel_criterion"] == "holds"                  # the copy rate's interval holds 0
    assert v["msr_hides_from_pixel_criterion"] == "holds"                  # ... or lies above it
    # the components' own intervals overlap, but their paired differences lie below 0: paired decides
    assert v["components"] == "holds" and _verdicts(_metrics())["components"] == "not distinguishable"
    m["paired"]["full_vs_baseline"]["copy_rate"] = _pair(-0.05, 0.01)
    m["paired"]["agc_vs_baseline"]["copy_rate"] = _pair(-0.03, -0.001)
    m["paired"]["iet_vs_baseline"]["mem_score"] = _pair(-0.01, 0.02)       # the criterion no longer falls
    m["mem_reduction_ci95"] = [0.3, 0.99]                                  # the bar lies inside the interval
    m["component_steps"][2]["paired"]["mem_score"] = _pair(-0.001, 0.003)
    m["below_copy_frontier_share"] = 0.5
    v = _verdicts(m)
    assert v["copy_rate"] == "not distinguishable" and v["mem_reduction"] == "not distinguishable"
    assert v["agc_hides_from_pixel_criterion"] == "does not hold"          # the copy rate falls too now
    assert v["iet_hides_from_pixel_criterion"] == "does not hold"          # the criterion no longer falls
    assert v["components"] == "not distinguishable" and v["frontier_copy"] == "does not hold"
    m["paired"]["full_vs_baseline"]["copy_rate"] = _pair(0.01, 0.05)
    m["mem_reduction_ci95"] = [0.1, 0.35]
    v = _verdicts(m)
    assert v["copy_rate"] == "does not hold" and v["mem_reduction"] == "does not hold"
    assert v["full_hides_from_pixel_criterion"] == "holds"


def test_privacy_tables_show_three_columns_the_floor_and_paired_differences():
    m = _with_privacy(_metrics())
    v = report.values(m)
    runs = v["runs_table"].splitlines()
    assert runs[0].startswith("| run | (b) copy rate [95 % CI] | (a) memorization score [95 % CI] |")
    assert runs[2].startswith("| baseline (`baseline-s0`) | 0.100 [0.000, 0.200] | 0.200 [0.180, 0.220] | 0.100 "
                              "| 0.300 |")
    assert runs[-1].startswith("| real held-out digits (never trained on) | 0.050 [0.020, 0.080] | 0.030 | 0.000 "
                               "| 0.013 |")
    paired = v["paired_table"].splitlines()
    assert paired[2] == ("| full IET-AGC+ − baseline (seeds pooled) | -0.090 [-0.120, -0.060] "
                         "| -0.190 [-0.210, -0.170] | -0.075 [-0.100, -0.050] | -0.150 [-0.200, -0.100] |")
    assert len(paired) == 2 + 4                                           # no control pair in these metrics
    steps = v["steps_table"]
    assert "| `baseline-s0` → `iet-s0` | -0.190 [-0.194, -0.186] | +0.000 [-0.010, +0.010] | +0.10 |" in steps
    assert "| `iet-s0` (final round) | 0.010 | 0.180 | yes | 0.004 | 0.090 | yes | 4.20 |" in v["frontier_table"]
    assert v["frontier_table"].splitlines()[-1] == ("| `bigbatch-s0` (control, last probe) | 0.200 | 0.140 | no | "
                                                    "0.100 | 0.070 | no | 4.60 |")
    assert v["copy_rate_change_shown"] == "-0.090 [-0.120, -0.060]" and v["mem_reduction_ci_shown"] == "[90%, 99%]"
    assert v["detector_same_data"] == "yes" and v["detector_trained_on"] == "copies=30, n_duplicated=20"
    rows = report.frontier_rows(m)
    assert len(rows) == 4 and rows[0]["copy_rate"] == 0.0 and rows[-1]["run"] == "bigbatch-s0"
    old = report.values(_metrics())                                      # a run without the new columns
    assert old["copy_rate_change_shown"] == "n/a" and old["detector_same_data"] == "n/a"
    assert "| baseline (`baseline-s0`) | n/a | 0.200 [0.180, 0.220] |" in old["runs_table"]
    assert old["paired_table"].count("| n/a | n/a | n/a | n/a |") == 5


def test_headline_is_the_copy_rate_beside_the_memorization_score():
    keys = [k for k, _, _ in report.HEADLINES]
    assert keys[:4] == ["copy_rate_baseline", "copy_rate_full", "copy_rate_change", "mem_reduction"]


def test_values_are_tables_and_numbers_from_the_metrics():
    m = _metrics()
    v = report.values(m)
    assert v["n_seeds"] == 1 and v["max_later_step"] == pytest.approx(0.002)
    runs = v["runs_table"].splitlines()
    assert runs[2].startswith("| baseline (`baseline-s0`) | n/a | 0.200 [0.180, 0.220] |")
    assert runs[-2].startswith("| baseline, K x batch, steps / K (`bigbatch-s0`)") and len(runs) == 2 + 6 + 1
    control = v["frontier_table"].splitlines()[-1]
    assert control == "| `bigbatch-s0` (control, last probe) | 0.200 | 0.140 | no | n/a | n/a | n/a | 4.60 |"
    assert "| `full-s0` | 40 | 640 | 1 |" in v["taa_table"]       # 20 steps a proxy x 0.05: at most 1 above 0
    assert "| `baseline-s0` at step 30 | 0.30, 0.95 | 0.90, 0.60 |" in v["premise_table"]
    assert "| `agc-s0` | 30 | 40% | 2.0 | 1.0 |" in v["skips_table"]
    assert report.run_rows(m)[0] == {"run": "baseline-s0", "label": "baseline", "mem_score": 0.20,
                                     "gu_replication": 0.10, "planted_replication": 0.10, "frechet": 4.0,
                                     "probe_visits": 100, "taa_visits": 0}


@pytest.mark.parametrize("which", ["committed", "with privacy columns"])
def test_the_template_renders_the_committed_metrics_and_a_run_with_the_privacy_columns(tmp_path, which):
    import json

    from memlib.harness.report import paper_block
    from memlib.paths import repo_root

    figures = repo_root() / "figures"
    if which != "committed":
        (tmp_path / "06_ietagc").mkdir()
        m = _with_privacy(json.loads((figures / "06_ietagc" / "metrics.json").read_text())["metrics"])
        (tmp_path / "06_ietagc" / "metrics.json").write_text(json.dumps({"metrics": m}))
        figures = tmp_path
    text = paper_block("06_ietagc", figures=figures)
    assert "{" not in text and "not yet run" not in text
    assert "| IET+AGC+MSR+TAA (full) (`full-s0`) |" in text and "**IET alone gives" in text
    assert "**The training seed is not resampled.**" in text
    verdicts = sum(text.count(f"**{v}**") for v in ("holds", "does not hold", "not distinguishable", "not measured"))
    assert verdicts == len(report.claims(_metrics()))           # every claim's verdict, once
    # the committed figures carry the copy detector's columns too: the copy-rate claims are measured either way
    assert "not measured" not in text.split("**Below the baseline's frontier?**")[0]
