"""Notebook 05's report: PRSS's claims and results tables come from the metrics dict alone, and the page
template renders from the committed metrics (Chen et al., CVPR 2025)."""
import copy
import json

import pytest

from memlib.prss import report
from memlib.paths import repo_root


@pytest.fixture(scope="module")
def committed():
    return json.loads((repo_root() / "figures" / "05_prss" / "metrics.json").read_text())["metrics"]


@pytest.fixture
def metrics(committed):
    return copy.deepcopy(committed)


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_the_report_recomputes_the_stored_comparisons(committed):
    tests = report.tests(committed)
    for src, found in tests.items():
        for name, test in found.items():
            assert test["holds"] == committed["claims"][src][name]["holds"], (src, name)


def test_operating_point_verdicts_follow_the_bar(metrics):
    assert _verdicts(metrics)["prss_drop_operating_bar"] == "holds"
    metrics["operating"]["PRSS, may drop trigger"]["heldout_clip_change"] = -0.05
    assert _verdicts(metrics)["prss_drop_operating_bar"] == "does not hold"
    metrics["operating"]["PRSS"].update(verbatim_replication=0.0, heldout_clip_change=0.0)
    assert _verdicts(metrics)["prss_operating_bar"] == "holds"


def test_matched_privacy_verdict_flips_when_prss_loses_utility(metrics):
    assert _verdicts(metrics)["drop_prss_above_pe_at_matched_privacy"] == "holds"
    for label in metrics["curves"]["PRSS, may drop trigger"]:
        metrics["rows"][label]["clip_content_memorized"] -= 0.1
    verdicts = _verdicts(metrics)
    assert verdicts["drop_prss_above_pe_at_matched_privacy"] == "does not hold"
    assert verdicts["drop_prss_loses_at_most_half_of_pe_drop"] == "does not hold"


def test_pr_and_ss_verdicts_flip_with_their_rows(metrics):
    assert _verdicts(metrics)["keep_pr_most_privacy"] == "holds"
    for label in metrics["curves"]["PR alone"]:
        metrics["rows"][label]["replication_memorized"] = 1.0
    assert _verdicts(metrics)["keep_pr_most_privacy"] == "does not hold"
    assert _verdicts(metrics)["keep_ss_best_utility"] == "does not hold"
    for label in metrics["curves"]["SS alone"]:
        metrics["rows"][label]["clip_content_memorized"] = 1.0
    assert _verdicts(metrics)["keep_ss_best_utility"] == "holds"


def test_reanchoring_magnitude_verdict_flips(metrics):
    assert _verdicts(metrics)["reanchoring_keeps_magnitude_low"] == "does not hold"
    for v in metrics["rebound"].values():
        v["pr"]["late_mean"] = v["pe"]["late_mean"] - 0.1
    assert _verdicts(metrics)["reanchoring_keeps_magnitude_low"] == "holds"


def test_nothing_to_measure_where_nothing_copies(metrics):
    metrics["replication_rate_none"] = 0.0
    metrics["rows"]["none"]["replication_verbatim"] = 0.0
    verdicts = _verdicts(metrics)
    assert {verdicts[n] for n in verdicts if n != "keep_rewrites_stay_high"} == {"not measured"}


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["testbed_table"].splitlines()
    assert lines[2].startswith("| none | ") and len(lines) == 3 + sum(map(len, metrics["curves"].values()))
    r = metrics["rows"]["none"]
    assert f"| none | {r['replication_memorized']:.3f} [" in lines[2]
    assert v["lambda_set"] == ", ".join(format(x, "g") for x in metrics["lambdas"])
    assert v["keep_matched_wins"] == metrics["prss_vs_pe_wins_matched_privacy"]
    metrics["rows"]["none"]["replication_memorized"] = 0.5
    assert "| none | 0.500 [" in report.values(metrics)["testbed_table"]


def test_the_template_renders_the_committed_metrics(committed):
    from memlib.harness.report import paper_block

    block = paper_block("05_prss")
    assert block.startswith("| PRSS on the testbed (test half) |") and "{" not in block.replace("λ ∈ {", "")
    assert f"verbatim replication {committed['prss_verbatim_replication']:.3f}" in block
    for c in report.claims(committed):
        assert f"**{c.verdict}**" in block, c.name
