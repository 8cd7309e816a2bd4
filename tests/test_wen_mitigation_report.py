"""Notebook 03's report: Wen et al.'s mitigation claims and the results tables come from the metrics dict alone,
and the page template renders from the committed metrics (Wen et al., ICLR 2024, Sec. 4)."""
import copy
import json

import pytest

from memlib.paths import repo_root
from memlib.wen import mitigation_report as report

CLAIMS = ["pe_halves_replication", "pe_untouched_bit_identical", "pe_below_random_token",
          "filter_lowers_replication", "probe_separates"]


def _row(method, knob, value, rep, clip=0.6, acted=0.0, groups=(0.0, 0.0, 0.0)):
    verbatim, image_dup, caption_dup = groups
    return {"method": method, "knob": knob, "value": value, "replication_memorized": rep,
            "replication_ci_memorized": [max(rep - 0.05, 0.0), rep + 0.05], "replication_verbatim": verbatim,
            "replication_image_dup": image_dup, "replication_caption_dup": caption_dup,
            "similarity_mean_memorized": 0.9, "clip_content_memorized": clip, "clip_content_heldout": 0.68,
            "frechet_heldout": 0.13, "frechet_floor_heldout": 0.09, "evals_per_image": 50.0,
            "seconds_per_image": 0.2, "acted_heldout": acted}


def _filter_row(method, value, verbatim, ci):
    return {"method": method, "knob": "tau", "value": value, "replication_verbatim": verbatim,
            "replication_ci_verbatim": ci, "clip_content_heldout": 0.67, "clip_content_ci_heldout": [0.63, 0.71],
            "frechet_heldout": 0.12, "frechet_ci_heldout": [0.2, 0.45]}


@pytest.fixture
def metrics():
    """A run where every claim holds: PE halves replication, leaves held-out prompts alone and beats random tokens;
    the filter lowers verbatim replication; the probe separates at every t."""
    rows = [_row("none", "none", 0, 0.8, groups=(1.0, 0.7, 0.7)),
            _row("random_token", "tokens", 1, 0.7), _row("random_token", "tokens", 8, 0.1, clip=0.35, acted=1.0),
            _row("wen_pe", "l_target", 2.5, 0.5), _row("wen_pe", "l_target", 2.0, 0.3),
            _row("lower_guidance", "guidance_scale", 2, 0.6), _row("lower_guidance", "guidance_scale", 0, 0.0)]
    return {"rows": rows, "replication_rate_none": 0.8, "clip_content_none": 0.6, "pe_operating_l_target": 2.0,
            "pe_replication_rate": 0.3, "pe_replication_rate_ci95": [0.2, 0.4], "pe_replication_reduction": 0.625,
            "pe_clip_content": 0.6, "pe_n_untouched": 10, "pe_heldout_untouched_share": 0.625,
            "pe_untouched_bit_identical_share": 1.0, "pe_vs_random_token_wins": 3,
            "matched_utility": {"levels": [0.4, 0.45, 0.5, 0.55], "wins": 3},
            "filter_rows": [_filter_row("unfiltered", 0, 1.0, [1.0, 1.0]),
                            _filter_row("wen_filter", 2.5, 0.5, [0.3, 0.7]),
                            _filter_row("wen_filter", 4.5, 1.0, [1.0, 1.0])],
            "filter_taus": {"p75": 2.5, "p99": 4.5},
            "filter_drops": {"tau2.5": {"dropped_share": 0.3, "planted_share_of_drops": 0.6,
                                        "planted_share_of_rows": 0.4},
                             "tau4.5": {"dropped_share": 0.04, "planted_share_of_drops": 0.9,
                                        "planted_share_of_rows": 0.4}},
            "probe_timesteps": [50, 500, 950], "probe_auc": [0.96, 0.99, 0.99], "probe_n_rows_per_side": 16}


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_every_claim_holds_on_a_run_that_shows_it(metrics):
    assert _verdicts(metrics) == dict.fromkeys(CLAIMS, "holds")
    evidence = {c.name: c.evidence for c in report.claims(metrics)}
    assert evidence["pe_halves_replication"]["reduction"] == 0.625 and evidence["pe_below_random_token"]["bar"] == 3
    assert evidence["filter_lowers_replication"]["lower_at_tau"] == [2.5]
    assert evidence["probe_separates"]["auc_by_t"] == {50: 0.96, 500: 0.99, 950: 0.99}


@pytest.mark.parametrize("change, claim", [
    (lambda m: m.update(pe_replication_reduction=0.45), "pe_halves_replication"),
    (lambda m: m.update(pe_untouched_bit_identical_share=0.9), "pe_untouched_bit_identical"),
    (lambda m: m.update(pe_vs_random_token_wins=2), "pe_below_random_token"),
    (lambda m: m["filter_rows"][1].update(replication_ci_verbatim=[0.3, 1.0]), "filter_lowers_replication"),
    (lambda m: m.update(probe_auc=[0.6, 0.99, 0.99]), "probe_separates"),
])
def test_a_verdict_flips_when_its_numbers_do(metrics, change, claim):
    m = copy.deepcopy(metrics)
    change(m)
    verdicts = _verdicts(m)
    assert verdicts.pop(claim) == "does not hold"
    assert set(verdicts.values()) == {"holds"}


@pytest.mark.parametrize("change, claim", [
    (lambda m: m.update(pe_replication_reduction=None), "pe_halves_replication"),   # nothing copied without PE
    (lambda m: m.update(pe_n_untouched=0), "pe_untouched_bit_identical"),
    (lambda m: m.update(pe_vs_random_token_wins=None, matched_utility={"levels": []}), "pe_below_random_token"),
    (lambda m: m.update(replication_rate_none=0.0), "pe_below_random_token"),   # nothing copies to begin with
    (lambda m: m["filter_rows"][0].update(replication_verbatim=0.0), "filter_lowers_replication"),
    (lambda m: m.update(filter_rows=[], filter_drops={}), "filter_lowers_replication"),
])
def test_a_claim_without_its_measurement_is_not_measured(metrics, change, claim):
    change(metrics)
    assert _verdicts(metrics)[claim] == "not measured"


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["method_table"].splitlines()
    assert lines[0].startswith("| method (test half) | replication [95 % CI] | verbatim / image dup / caption dup |")
    assert lines[0].endswith("| acts on held-out |") and lines[1] == "|---" * 9 + "|"
    # no mitigation, PE's whole sweep, then each baseline at its strongest (last) knob value
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| no mitigation", "| wen_pe (l_target = 2.5)", "| wen_pe (l_target = 2)", "| random_token (tokens = 8)",
        "| lower_guidance (guidance_scale = 0)"]
    assert ("| no mitigation | 0.800 [0.750, 0.850] | 1.00 / 0.70 / 0.70 | 0.900 | 0.600 | 0.680 | 0.130 (0.090) | "
            "50 / 200 | 0.00 |") in lines
    assert all(line.count("|") == 10 for line in lines)
    f = v["filter_table"].splitlines()
    assert f[2] == ("| unfiltered (shipped run) | 1.000 [1.000, 1.000] | 0.670 [0.630, 0.710] | "
                    "0.120 [0.200, 0.450] | — | — |")
    assert f[3].startswith("| tau = 2.5 (p75 of ordinary rows) | 0.500 [0.300, 0.700] |")
    assert f[3].endswith("| 30% | 60% |")
    assert v["filter_lower_taus"] == "2.5" and v["planted_share_of_rows"] == 0.4
    assert v["probe_auc_by_t"] == "t=50: 0.96, t=500: 0.99, t=950: 0.99" and v["probe_separating_t"] == "50, 500, 950"
    assert v["matched_levels"] == 4


def test_parts_a_run_lacks_are_not_a_number(metrics):
    for key in ("pe_operating_l_target", "pe_replication_rate", "pe_replication_reduction", "pe_clip_content",
                "pe_n_untouched", "pe_heldout_untouched_share", "pe_untouched_bit_identical_share"):
        del metrics[key]
    metrics.update(pe_vs_random_token_wins=None, filter_rows=[], filter_drops={}, filter_taus={})
    v = report.values(metrics)
    assert all(v[k] != v[k] for k in ("pe_operating_l_target", "pe_replication_rate", "pe_vs_random_token_wins",
                                      "filter_unfiltered_verbatim", "planted_share_of_rows"))
    assert v["filter_lower_taus"] == "none" and len(v["filter_table"].splitlines()) == 2


def test_the_template_renders_the_committed_metrics():
    from memlib.harness.notebooks import BY_STEM
    from memlib.harness.report import paper_block

    assert BY_STEM["03_mitigation"].package == "memlib.wen.mitigation_report"
    m = json.loads((repo_root() / "figures" / "03_mitigation" / "metrics.json").read_text())["metrics"]
    assert all(key in m for key, _, _ in report.HEADLINES)
    block = paper_block("03_mitigation")
    assert block.startswith("| method (test half) |") and "{" not in block and "n/a" not in block
    assert (f"pooled memorized replication {m['replication_rate_none']:.3f} → {m['pe_replication_rate']:.3f} "
            f"({m['pe_replication_reduction']:.0%} lower)") in block
    assert f"**PE at l_target = {m['pe_operating_l_target']:g}**" in block
    assert f"PE is less similar to the planted image at {m['pe_vs_random_token_wins']} of them" in block
    for r in m["filter_rows"][1:]:
        assert f"| tau = {r['value']:g} (p" in block
    assert ", ".join(f"t={t}: {a:.2f}" for t, a in zip(m["probe_timesteps"], m["probe_auc"])) in block
    for c in report.claims(m):
        assert f"*{c.claim}*: **{c.verdict}**" in block
