"""Notebook 04's report: AMG's claims and results tables come from the metrics dict alone, and the page template
renders from the committed metrics (Chen, Liu, Xu, CVPR 2024)."""
import copy
import json

import pytest

from memlib.amg import report
from memlib.paths import repo_root


def _row(rep, clip=0.6, clip_heldout=0.68, fd=0.13, groups=(0.0, 0.0, 0.0)):
    verbatim, image_dup, caption_dup = groups
    return {"replication_memorized": rep, "replication_ci_memorized": [max(rep - 0.05, 0.0), rep + 0.05],
            "replication_verbatim": verbatim, "replication_image_dup": image_dup,
            "replication_caption_dup": caption_dup, "similarity_mean_memorized": 0.9,
            "clip_content_memorized": clip, "clip_content_heldout": clip_heldout, "frechet_heldout": fd,
            "frechet_floor_heldout": 0.09, "evals_per_image": 50.0, "seconds_per_image": 0.1}


def _digits(none, main):
    score = lambda gu: {"gu_replication": gu, "gu_replication_ci": [gu - 0.01, gu + 0.01], "planted_replication": gu,
                        "nl2_below_1.4": 0.8, "nl2_p5": 0.2, "frechet": 2.5, "frechet_floor": 1.9,
                        "fired_share": 0.3}
    return {"test": {"none": score(none), "AMG Main": score(main), "AMG Strong": score(main / 2)}, "main_c3": 10.0,
            "calibration": {"fire_share": 0.05}, "real_heldout_nl2_below_1_4": 0.7}


@pytest.fixture
def metrics():
    """A run where every claim holds: AMG removes the copies at a small utility cost."""
    rows = {"none": _row(0.85, 0.62, groups=(1.0, 0.7, 0.8)), "AMG Main": _row(0.01, 0.60, groups=(0.03, 0.0, 0.0)),
            "AMG, released-code c1 = 13": _row(0.3, 0.58, groups=(0.9, 0.0, 0.0)),
            "spe": _row(0.8, groups=(1.0, 0.6, 0.8)), "dup": _row(0.6, groups=(1.0, 0.4, 0.4)),
            "sim": _row(0.2, groups=(0.5, 0.02, 0.03)), "switch always on": _row(0.0, 0.5, clip_heldout=0.64),
            "constant threshold": _row(0.04, 0.60, groups=(0.1, 0.0, 0.0))}
    return {"rows": rows, "replication_rate_none": 0.85, "replication_rate_amg": 0.01,
            "replication_rate_amg_ci95": [0.0, 0.05], "clip_score_none": 0.62, "clip_score_amg": 0.60,
            "clip_content_change_amg": -0.032, "main_c3": 300.0, "main_schedule": "code",
            "digits_uncond_reduction": 0.86, "digits_class_reduction": 0.85,
            "digits": {"class-conditional": _digits(0.21, 0.03), "unconditional": _digits(0.22, 0.03)}}


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_every_claim_holds_on_a_run_that_shows_it(metrics):
    assert _verdicts(metrics) == dict.fromkeys(
        ["removes_copies", "keeps_utility", "always_on_costs_utility", "constant_threshold_worse",
         "each_single_term_weaker", "digits_removes_copies"], "holds")
    evidence = {c.name: c.evidence for c in report.claims(metrics)}
    assert evidence["removes_copies"]["replication_amg"] == 0.01
    assert evidence["each_single_term_weaker"]["groups_weaker"]["sim"] == ["verbatim", "image_dup", "caption_dup"]


@pytest.mark.parametrize("change, claim", [
    (lambda m: m.update(replication_rate_amg=0.05), "removes_copies"),
    (lambda m: m.update(clip_content_change_amg=-0.08), "keeps_utility"),
    (lambda m: m["rows"]["switch always on"].update(clip_content_heldout=0.7, frechet_heldout=0.12),
     "always_on_costs_utility"),
    (lambda m: m["rows"]["constant threshold"].update(replication_memorized=0.01, clip_content_memorized=0.61),
     "constant_threshold_worse"),
    (lambda m: m["rows"]["spe"].update(replication_verbatim=0.0, replication_image_dup=0.0,
                                       replication_caption_dup=0.0), "each_single_term_weaker"),
    (lambda m: m.update(digits_class_reduction=0.5), "digits_removes_copies"),
])
def test_a_verdict_flips_when_its_numbers_do(metrics, change, claim):
    m = copy.deepcopy(metrics)
    change(m)
    verdicts = _verdicts(m)
    assert verdicts.pop(claim) == "does not hold"
    assert set(verdicts.values()) == {"holds"}


def test_a_digits_run_without_copies_to_remove_is_not_measured(metrics):
    metrics["digits_uncond_reduction"] = float("nan")
    assert _verdicts(metrics)["digits_removes_copies"] == "not measured"


def test_no_verdict_on_removing_copies_where_nothing_copies_without_guidance(metrics):
    metrics.update(replication_rate_none=0.0, replication_rate_amg=0.0)
    assert _verdicts(metrics)["removes_copies"] == "not measured"


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["testbed_table"].splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| none", "| AMG Main", "| AMG, released-code c1 = 13", "| spe", "| dup", "| sim", "| switch always on",
        "| constant threshold"]
    assert ("| AMG Main | 0.010 [0.000, 0.060] | 0.03 / 0.00 / 0.00 | 0.900 | 0.600 | 0.680 | 0.130 (0.090) | "
            "50 / 100 |") in lines
    assert "| unconditional, AMG Strong | 0.015 [0.005, 0.025] |" in v["digits_table"]
    assert v["single_terms_weaker"].startswith("spe: verbatim, image_dup, caption_dup; dup:")
    assert v["digits_class_frechet_change"] == 0.0 and v["digits_uncond_gu_amg"] == 0.03
    # parts a run may lack are not a number, which the page shows as n/a
    assert v["matched_03_replication"] == "n/a" and v["guidance_1_verbatim"] != v["guidance_1_verbatim"]


def test_the_template_renders_the_committed_metrics():
    from memlib.harness.report import paper_block

    m = json.loads((repo_root() / "figures" / "04_amg" / "metrics.json").read_text())["metrics"]
    assert report.ablation_tests(m["rows"]) == m["claims"]   # the stored tests are the report's, on its rows
    block = paper_block("04_amg")
    assert block.startswith("| AMG on the testbed (test half) |") and "{" not in block and "n/a" not in block
    assert f"pooled memorized replication {m['replication_rate_none']:.3f} → {m['replication_rate_amg']:.3f}" in block
    for c in report.claims(m):
        assert f"**{c.verdict}**" in block
