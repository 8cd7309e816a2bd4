"""Notebook 05's report: PRSS's claims, tables and page come from the metrics dict alone, every claim judged by its
stored paired interval (Chen et al., CVPR 2025); metrics of a run made before the intervals were stored render
with those claims not measured."""
import copy
import json
import re

import pytest

from memlib.paths import repo_root
from memlib.prss import judge, report
from test_prss_paired import synthetic_result


@pytest.fixture(scope="module")
def committed():
    return json.loads((repo_root() / "figures" / "05_prss" / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def built():
    return json.loads(json.dumps(synthetic_result(hide=True).to_metrics(), default=float))


@pytest.fixture
def metrics(built):
    return copy.deepcopy(built)


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def _template():
    return (repo_root() / "docs" / "templates" / "05_prss.md").read_text()


def _render(m, timings=None):
    from collections import defaultdict

    from memlib.claims import render

    values = {**m, **report.values(m), "claims": {c.name: c for c in report.claims(m)},
              "timings": defaultdict(lambda: float("nan"), timings or {})}
    return render(_template().strip(), values, where="05_prss.md")


def test_judging_an_interval():
    assert judge.direction({"ci95": [0.01, 0.2]}) == "higher" and judge.direction({"ci95": [-0.2, -0.01]}) == "lower"
    assert judge.direction({"ci95": [-0.1, 0.1]}) == "not distinguishable" and judge.direction(None) is None
    assert judge.holds({"ci95": [-0.2, -0.01]}, "lower") is True and judge.holds({"ci95": [0.1, 0.2]}, "lower") is False
    assert judge.within([0.0, 0.04], 0.05, "at most") is True and judge.within([0.06, 0.1], 0.05, "at most") is False
    assert judge.within([0.0, 0.1], 0.05, "at most") is None and judge.within([-0.02, 0.01], -0.03, "at least")
    assert judge.count([True, True, None, False], 3) == (None, 2, 1)
    assert judge.count([True, True, False, False], 3) == (False, 2, 2)
    assert judge.count([True, True, True, None], 3) == (True, 3, 0)
    assert judge.both(True, None) is None and judge.both(True, False) is False and judge.both(True, True) is True


def test_operating_bar_flips_with_the_intervals(metrics):
    op, held = metrics["operating"]["PRSS"], metrics["points"]["PRSS"]["vs_none"]["heldout_clip_phrasings_relative"]
    op["verbatim_replication_ci95"], held["ci95"] = [0.0, 0.04], [-0.02, 0.01]
    assert _verdicts(metrics)["prss_operating_bar"] == "holds"
    held["ci95"] = [-0.05, 0.01]                                  # within 3 %? the interval reaches below
    assert _verdicts(metrics)["prss_operating_bar"] == "not distinguishable"
    held["ci95"] = [-0.06, -0.04]
    assert _verdicts(metrics)["prss_operating_bar"] == "does not hold"
    held["ci95"], op["verbatim_replication_ci95"] = [-0.02, 0.01], [0.06, 0.2]
    assert _verdicts(metrics)["prss_operating_bar"] == "does not hold"


def test_copy_and_pixel_claims_flip_with_their_intervals(metrics):
    v = metrics["points"]["PRSS"]["vs_none"]
    assert _verdicts(metrics)["prss_copy_falls"] == "holds"
    assert _verdicts(metrics)["prss_hides_from_pixel_criterion"] == "does not hold"
    v["copy_rate"]["ci95"] = [-0.1, 0.05]                         # the copy rate's fall no longer distinguishable
    verdicts = _verdicts(metrics)
    assert verdicts["prss_copy_falls"] == "not distinguishable"
    assert verdicts["prss_hides_from_pixel_criterion"] == "holds"
    v["replication"]["ci95"] = [-0.1, 0.05]                       # nor the pixel criterion's
    assert _verdicts(metrics)["prss_hides_from_pixel_criterion"] == "not distinguishable"


def test_comparison_counts_follow_the_stored_intervals(metrics):
    mp = metrics["comparisons"]["rewrites that may drop the trigger"]["matched_privacy"]
    assert _verdicts(metrics)["drop_prss_above_pe_at_matched_privacy"] == "holds"
    for pd in mp["paired"][:2]:
        pd["ci95"] = [-0.01, 0.1]
    assert _verdicts(metrics)["drop_prss_above_pe_at_matched_privacy"] == "not distinguishable"
    mp["paired"][0]["ci95"] = [-0.1, -0.01]
    mp["paired"][1]["ci95"] = [-0.1, -0.01]
    assert _verdicts(metrics)["drop_prss_above_pe_at_matched_privacy"] == "does not hold"
    assert report.values(metrics)["drop_matched_wins"] == 2
    metrics["rebound"][next(iter(metrics["rebound"]))]["paired_late"]["ci95"] = [0.1, 0.2]   # PR above PE there
    assert _verdicts(metrics)["reanchoring_keeps_magnitude_low"] == "does not hold"          # 1 of 2, need 2


def test_keep_rewrites_check_flips_with_its_interval(metrics):
    keep = metrics["cheap_check"]["per_group"]["verbatim"]["keep_vs_original"]
    assert _verdicts(metrics)["keep_rewrites_stay_high"] == "holds"
    keep["ci95"] = [-0.2, -0.05]
    assert _verdicts(metrics)["keep_rewrites_stay_high"] == "not distinguishable"
    keep["ci95"] = [-0.3, -0.15]
    assert _verdicts(metrics)["keep_rewrites_stay_high"] == "does not hold"


def test_nothing_to_measure_where_nothing_copies(metrics):
    metrics["replication_rate_none"] = metrics["copy_rate_none"] = 0.0
    metrics["rows"]["none"]["replication_verbatim"] = 0.0
    verdicts = _verdicts(metrics)
    assert {verdicts[n] for n in verdicts if n != "keep_rewrites_stay_high"} == {"not measured"}


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["testbed_table"].splitlines()
    assert lines[2].startswith("| none | ") and lines[3].startswith("| content caption alone (reference) | ")
    assert len(lines) == 4 + sum(map(len, metrics["curves"].values()))
    r = metrics["rows"]["none"]
    assert f"| none | {r['copy_rate_memorized']:.3f} [" in lines[2]
    assert f"({metrics['nn_chance']:.2f})" in lines[2]
    assert v["points_table"].count("\n") == 1 + len(metrics["points"])
    assert v["groups_table"].count("| verbatim |") == 3 and "removes the memorized key (upper bound)" in v[
        "groups_table"]
    assert v["seed_table"].count("\n") == 3 + len(metrics["seeds"]["1"]["points"])
    assert v["keep_matched_wins"] == metrics["prss_vs_pe_wins_matched_privacy"] == 4
    assert all(key in metrics for key, _, _ in report.HEADLINES)
    metrics["rows"]["none"]["copy_rate_memorized"] = 0.5
    assert "| none | 0.500 [" in report.values(metrics)["testbed_table"]


def test_the_template_renders_a_new_run_with_every_claim_and_its_seconds_from_timings(built):
    block = _render(built, {"prss_seconds_ratio": 2.5})
    assert "{" not in block.replace("λ ∈ {", "").replace("}", "")
    assert "2.50× the seconds" in block and f"{built['prss_copy_rate']:.3f} [" in block
    assert "the faithful reading" in block and "removes the memorized key (upper bound)" in block
    assert "cannot act there by construction" in block
    named = set(re.findall(r"claims\[(\w+)\]", _template()))
    claims = {c.name for c in report.claims(built)}
    assert named == claims                                            # every claim judged is on the page


def test_the_template_renders_the_committed_metrics(committed):
    from memlib.harness.report import paper_block

    block = paper_block("05_prss")
    assert block.startswith("| PRSS on the testbed (test half) |") and "{" not in block.replace("λ ∈ {", "")
    assert f"verbatim {committed['prss_verbatim_replication']:.3f}" in block
    assert f"{committed['rows']['none']['replication_memorized']:.3f} [" in block
    assert "not measured" not in set(_verdicts(committed).values())   # every claim has its paired interval
