"""Notebook 02's report: the claims, table and numbers of its results block, from the metrics dict alone."""
import json

import pytest

from memlib.paths import repo_root
from memlib.wen import explain_report as report

NAN = float("nan")
COMMITTED = repo_root() / "figures" / "02_explain" / "metrics.json"


def _metrics(**over) -> dict:
    """A small hand-built metrics dict: 10 verbatim test prompts of 20, three testbed seeds."""
    v = "verbatim"
    m = {f"{v}_n_prompts": 20, f"{v}_n_dev": 10, f"{v}_n_test": 10, f"{v}_n_test_pooled": 30,
         f"{v}_trigger_top2_rate_wen_exact": 0.9, f"{v}_trigger_top2_rate_wen_exact_ci95": [0.6, 0.98],
         f"{v}_trigger_top2_chance_test": 0.4,
         f"{v}_trigger_top2_rate_wen_exact_pooled": 0.8, f"{v}_trigger_top2_rate_wen_exact_pooled_ci95": [0.62, 0.9],
         "testbed_seeds": [0, 1, 2],
         "per_seed": {"0": {v: {"wen_exact": 0.9, "chance_test": 0.4, "n_test": 10}},
                      "1": {v: {"wen_exact": 0.8, "chance_test": 0.5, "n_test": 10}},
                      "2": {v: {"wen_exact": 0.7, "chance_test": 0.6, "n_test": 20}}},
         f"{v}_trigger_top2_rate_window_dev_by_k": {"1": 0.9, "10": 0.7, "50": 0.8}, f"{v}_chosen_window_dev": 1,
         f"{v}_trigger_top2_rate_window_test": 1.0, f"{v}_trigger_top2_rate_window_test_ci95": [0.72, 1.0],
         f"{v}_trigger_top2_rate": 0.5, f"{v}_trigger_top2_rate_ci95": [0.3, 0.7], f"{v}_trigger_top2_chance": 0.45,
         f"{v}_trigger_top2_rate_occlusion": 0.95, f"{v}_trigger_top2_rate_integrated": 0.6,
         f"{v}_trigger_top2_rate_input_embedding": 0.55,
         "drop_control_replication_trigger_piece": 0.3, "drop_control_replication_other_token": 0.9,
         "drop_control_trigger_more_necessary_share": 0.85,
         "drop_control_n_variants": {"trigger_piece": 40, "other_token": 120},
         "drop_control_replication_by_kind": {"trigger_piece": 0.3, "content_word": 0.8, "function_word": 1.0},
         f"{v}_path_alpha90_mean": 0.7, f"{v}_path_alpha90_wen_first_step_hits": 0.75,
         f"{v}_path_alpha90_wen_first_step_misses": 0.5,
         f"{v}_padding_link_padding_share_hits": 0.6, f"{v}_padding_link_padding_share_misses": 0.9}
    return {**m, **over}


def _claims(m: dict) -> dict:
    return {c.name: c for c in report.claims(m)}


def test_claims_compare_rates_with_the_intervals_the_metrics_hold():
    c = _claims(_metrics())
    assert c["above_chance"].verdict == "holds"           # chance 0.4 below Wen's interval [0.6, 0.98]
    assert c["above_chance_pooled"].evidence["chance"] == pytest.approx((4 + 5 + 12) / 40)   # weighted by n_test
    assert c["above_chance_pooled"].verdict == "holds"    # 0.525 below [0.62, 0.9]
    assert c["window_beats_exact"].verdict == "holds"     # k = 1 scores 1.0, above Wen's [0.6, 0.98]
    assert c["trigger_is_the_key"].verdict == "holds"
    assert c["occlusion_beats_wen"].verdict == "holds"    # 0.95 above [0.3, 0.7]
    assert c["integrated_beats_wen"].verdict == "not distinguishable"   # 0.6 inside [0.3, 0.7]
    # the hypotheses: no interval for the hit and miss means, so no difference is supported
    assert c["saturation_explains_misses"].verdict == "not distinguishable"
    assert c["padding_route_explains_misses"].verdict == "not distinguishable"
    assert c["above_chance"].evidence["withdrawn_bar"] == 0.8


def test_claims_that_do_not_hold_and_claims_not_measured():
    c = _claims(_metrics(verbatim_trigger_top2_chance_test=0.99, verbatim_chosen_window_dev=50,
                         drop_control_replication_trigger_piece=0.95, verbatim_trigger_top2_rate_integrated=0.1,
                         verbatim_padding_link_padding_share_misses=NAN))
    assert c["above_chance"].verdict == "does not hold"   # chance above Wen's interval
    inside = _claims(_metrics(verbatim_trigger_top2_rate_wen_exact_pooled_ci95=[0.5, 0.9]))
    assert inside["above_chance_pooled"].verdict == "not distinguishable"   # chance 0.525 inside the interval
    assert c["window_beats_exact"].verdict == "does not hold"   # the dev half chose all steps: Wen's own setting
    assert c["trigger_is_the_key"].verdict == "does not hold"
    assert c["integrated_beats_wen"].verdict == "does not hold"
    assert c["padding_route_explains_misses"].verdict == "not measured"    # Wen missed no prompt
    floor = _claims(_metrics(drop_control_replication_trigger_piece=0.0, drop_control_replication_other_token=0.0))
    assert floor["trigger_is_the_key"].verdict == "not measured"       # nothing copies: no copy to break


def test_a_result_without_trigger_groups_has_every_claim_unmeasured():
    from memlib.wen.explain_results import ExplainResult

    assert {c.verdict for c in ExplainResult({}).claims()} == {"not measured"}


def test_values_build_the_table_and_numbers_from_metrics_alone():
    v = report.values(_metrics())
    assert v["num_steps"] == 50 and v["verbatim_pooled_chance"] == pytest.approx(0.525)
    assert v["verbatim_dev_rates_by_k"] == "k = 1: 0.900, k = 10: 0.700, k = 50: 0.800"
    assert v["verbatim_rate_per_seed"] == "seed 0: 0.900 of 10; seed 1: 0.800 of 10; seed 2: 0.700 of 20"
    table = v["attribution_table"]
    assert table.splitlines()[0].endswith("| verbatim |")     # caption_dup absent: one column
    assert "| 0.900 [0.600, 0.980] |" in table and "| k = 1: 1.000 [0.720, 1.000] |" in table
    assert "| 0.950 |" in table and "| 10 / 10 (20); 30 |" in table
    assert report.attribution_table({}) == "no trigger group was attributed"


def test_the_committed_run_renders_its_block_with_its_numbers():
    from memlib.harness.notebooks import BY_STEM
    from memlib.harness.report import paper_block

    nb = BY_STEM["02_explain"]
    assert nb.package == "memlib.wen.explain_report" and nb.block == "explain"
    assert f"<!-- {nb.block}:begin -->" in (repo_root() / "docs" / "results.md").read_text()
    m = json.loads(COMMITTED.read_text())["metrics"]
    assert all(key in m for key, _, _ in report.HEADLINES)
    c = _claims(m)
    assert c["above_chance"].verdict == "not distinguishable" and c["above_chance_pooled"].verdict == "holds"
    assert c["trigger_is_the_key"].verdict == "holds" and c["occlusion_beats_wen"].verdict == "holds"
    block = paper_block("02_explain", repo_root() / "figures", repo_root())
    for number in ("0.688 [0.444, 0.858] of testbed seed 0's 16 verbatim test prompts", "scores 0.490",
                   "0.750 [0.612, 0.851] against chance 0.456", "chose k = 50", "0.448 (92 variants)",
                   "1.000 (262 variants", "for 1.000 and integrated", "against Wen's 0.750 [0.579, 0.867]",
                   "a = 0.68 on average", "misses reach 90 % at 0.665", "82% of d(p)",
                   "18% with its EOS/padding rows replaced", "Wen's 8 misses put 82%", "The 0.80 bar"):
        assert number in block, number
    assert "{" not in block and "n/a" not in block
