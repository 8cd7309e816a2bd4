"""Notebook 03's report: Wen et al.'s mitigation claims and the results tables come from the metrics dict alone,
every comparison through its paired interval, and the page template renders from hand-built metrics of the
current layout and from the committed (older) metrics alike (Wen et al., ICLR 2024, Sec. 4)."""
import copy
import json

import pytest

from memlib.claims import render
from memlib.paths import repo_root
from memlib.wen import mitigation_report as report


def _d(estimate, lo, hi, relative=False):
    """A stored paired difference (``PairedDifference.to_dict``)."""
    return {"estimate": estimate, "ci95": [lo, hi], "n_prompts": 40, "n_units": 32, "relative": relative}


LOWER, UNCLEAR, HIGHER = _d(-0.3, -0.45, -0.15), _d(-0.05, -0.2, 0.1), _d(0.2, 0.05, 0.35)


def _row(method, knob, value, rep, copy_rate=None, clip=0.6, acted=0.0, groups=(0.0, 0.0, 0.0)):
    verbatim, image_dup, caption_dup = groups
    copy_rate = rep if copy_rate is None else copy_rate
    return {"method": method, "knob": knob, "value": value, "replication_memorized": rep,
            "replication_ci_memorized": [max(rep - 0.05, 0.0), rep + 0.05], "replication_verbatim": verbatim,
            "replication_image_dup": image_dup, "replication_caption_dup": caption_dup,
            "copy_rate_memorized": copy_rate, "copy_rate_ci_memorized": [max(copy_rate - 0.1, 0.0), copy_rate + 0.1],
            "nn_is_planted_memorized": 0.9, "similarity_mean_memorized": 0.9, "clip_content_memorized": clip,
            "clip_phrasings_memorized": clip - 0.01, "clip_content_heldout": 0.68, "clip_phrasings_heldout": 0.66,
            "frechet_heldout": 0.13, "frechet_floor_heldout": 0.09, "evals_per_image": 50.0,
            "acted_heldout": acted, "n_prompts_heldout": 16}


def _paired(copy_change, replication_change, clip=LOWER):
    return {"copy": copy_change, "replication": replication_change, "nn_planted": UNCLEAR, "clip_phrasings": clip,
            "clip_phrasings_heldout": UNCLEAR, "replication_relative": _d(-0.6, -0.8, -0.4, relative=True),
            "replication_verbatim": LOWER, "replication_image_dup": UNCLEAR, "replication_caption_dup": LOWER}


@pytest.fixture
def metrics():
    """PE and the filter lower both the copy rate and pixel replication (neither hides), random tokens lower pixel
    replication only (it hides), lower guidance changes nothing distinguishable; PE beats random tokens at matched
    utility and costs utility; the probe separates at every t; on seed 1 PE's transferred point works, its own
    does not distinguishably."""
    rows = [_row("none", "none", 0, 0.8, groups=(1.0, 0.7, 0.7)),
            _row("random_token", "tokens", 1, 0.7), _row("random_token", "tokens", 8, 0.1, 0.7, clip=0.35, acted=1.0),
            _row("wen_pe", "l_target", 2.5, 0.5), _row("wen_pe", "l_target", 2.0, 0.3, 0.2),
            _row("lower_guidance", "guidance_scale", 2, 0.6), _row("lower_guidance", "guidance_scale", 0, 0.0)]
    unf, filt = _row("unfiltered", "tau", 0, 0.8, groups=(1.0, 0.7, 0.7)), _row("wen_filter", "tau", 2.5, 0.5, 0.4)
    seed = {"pe_operating_l_target": 1.5, "pe_transfer_l_target": 2.0, "nn_planted_chance": 0.3,
            "rows": {"none": _row("none", "none", 0, 0.9), "pe_transfer": _row("wen_pe", "l_target", 2.0, 0.3),
                     "pe_own": _row("wen_pe", "l_target", 1.5, 0.6)},
            "content_reference": _row("content_caption", "none", 0, 0.0),
            "paired": {"pe_transfer": _paired(LOWER, LOWER), "pe_own": _paired(UNCLEAR, LOWER)}}
    return {"rows": rows, "replication_rate_none": 0.8, "copy_rate_none": 0.8, "clip_content_none": 0.6,
            "clip_phrasings_none": 0.59, "nn_planted_chance": 0.25, "content_reference": _row("content_caption", "none",
                                                                                              0, 0.0, clip=0.61),
            "pe_operating_l_target": 2.0, "pe_reduction_bar": 0.5, "pe_replication_rate": 0.3,
            "pe_replication_rate_ci95": [0.2, 0.4], "pe_replication_reduction": 0.625, "pe_copy_rate": 0.2,
            "pe_clip_content": 0.6, "pe_clip_phrasings": 0.59, "pe_evals_per_image": 59.0, "evals_per_image_none": 50.0,
            "pe_n_untouched": 10, "pe_heldout_untouched_share": 0.625, "pe_untouched_bit_identical_share": 1.0,
            "pe_vs_random_token_wins": 3, "matched_utility": {"levels": [0.4, 0.45, 0.5, 0.55], "wins": 3},
            "matched_utility_phrasings": {"levels": [0.4, 0.5], "copy_pe": [0.1, 0.2], "copy_random_token": [0.6, 0.7],
                                          "paired_copy": LOWER, "paired_similarity": LOWER},
            "chosen_points": {"wen_pe": {"knob": "l_target", "value": 2.0, "paired": _paired(LOWER, LOWER)},
                              "random_token": {"knob": "tokens", "value": 8, "paired": _paired(UNCLEAR, LOWER)},
                              "lower_guidance": {"knob": "guidance_scale", "value": 0,
                                                 "paired": _paired(UNCLEAR, UNCLEAR)}},
            "filter_rows": [unf, filt], "filter_dev_rows": [dict(unf, replication_memorized=0.9),
                                                            dict(filt, replication_memorized=0.4)],
            "filter_taus": {"p75": 2.5}, "filter_chosen_tau": 2.5, "filter_paired": _paired(LOWER, LOWER),
            "filter_copy_rate": 0.4, "filter_unfiltered_copy_rate": 0.8, "filter_replication_rate": 0.5,
            "filter_unfiltered_replication_rate": 0.8,
            "filter_drops": {"tau2.5": {"dropped_share": 0.3, "planted_share_of_drops": 0.6,
                                        "planted_share_of_rows": 0.4}},
            "probe_timesteps": [50, 500, 950], "probe_auc": [0.96, 0.99, 0.99], "probe_n_rows_per_side": 16,
            "seeds": {"1": seed}}


EXPECTED = {"pe_lowers_copy_rate": "holds", "pe_lowers_replication": "holds", "pe_untouched_bit_identical": "holds",
            "pe_below_random_token": "holds", "pe_costs_utility": "holds", "filter_lowers_replication": "holds",
            "filter_lowers_copy_rate": "holds", "probe_separates": "holds",
            "wen_pe_hides_from_pixel_criterion": "does not hold",
            "random_token_hides_from_pixel_criterion": "holds",
            "lower_guidance_hides_from_pixel_criterion": "not distinguishable",
            "wen_filter_hides_from_pixel_criterion": "does not hold",
            "seed1_pe_transfer_lowers_copy_rate": "holds", "seed1_pe_own_lowers_copy_rate": "not distinguishable"}


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_each_claim_reads_its_paired_interval(metrics):
    assert _verdicts(metrics) == EXPECTED
    evidence = {c.name: c.evidence for c in report.claims(metrics)}
    assert evidence["pe_lowers_copy_rate"]["change"] == LOWER and evidence["pe_lowers_copy_rate"]["l_target"] == 2.0
    assert evidence["filter_lowers_replication"]["change_image_dup"] == UNCLEAR
    assert evidence["probe_separates"]["auc_by_t"] == {50: 0.96, 500: 0.99, 950: 0.99}


PAIRED_CLAIMS = [
    ("pe_lowers_copy_rate", lambda m, d: m["chosen_points"]["wen_pe"]["paired"].update(copy=d)),
    ("pe_lowers_replication", lambda m, d: m["chosen_points"]["wen_pe"]["paired"].update(replication=d)),
    ("pe_below_random_token", lambda m, d: m["matched_utility_phrasings"].update(paired_copy=d)),
    ("pe_costs_utility", lambda m, d: m["chosen_points"]["wen_pe"]["paired"].update(clip_phrasings=d)),
    ("filter_lowers_replication", lambda m, d: m["filter_paired"].update(replication=d)),
    ("filter_lowers_copy_rate", lambda m, d: m["filter_paired"].update(copy=d)),
    ("seed1_pe_transfer_lowers_copy_rate", lambda m, d: m["seeds"]["1"]["paired"]["pe_transfer"].update(copy=d)),
]


@pytest.mark.parametrize("claim, put", PAIRED_CLAIMS)
@pytest.mark.parametrize("interval, expected", [(UNCLEAR, "not distinguishable"), (HIGHER, "does not hold"),
                                                (_d(-0.02, -0.04, -0.001), "holds"), (None, "not measured")])
def test_a_paired_claim_follows_its_interval_not_its_estimate(metrics, claim, put, interval, expected):
    m = copy.deepcopy(metrics)
    put(m, interval)
    verdicts = _verdicts(m)
    assert verdicts.pop(claim) == expected
    hiding = "_hides_from_pixel_criterion"    # read the same intervals: checked on their own below
    assert {k: v for k, v in verdicts.items() if not k.endswith(hiding)} == {
        k: v for k, v in EXPECTED.items() if k != claim and not k.endswith(hiding)}


def test_hiding_from_the_pixel_criterion_needs_pixel_replication_to_fall_and_the_copy_rate_not_to():
    assert report.hides_verdict({"replication": LOWER, "copy": UNCLEAR}) == "holds"
    assert report.hides_verdict({"replication": LOWER, "copy": HIGHER}) == "holds"
    assert report.hides_verdict({"replication": LOWER, "copy": LOWER}) == "does not hold"
    assert report.hides_verdict({"replication": UNCLEAR, "copy": UNCLEAR}) == "not distinguishable"
    assert report.hides_verdict({"replication": HIGHER, "copy": UNCLEAR}) == "does not hold"
    assert report.hides_verdict({"replication": LOWER}) == "not measured"
    assert report.hides_verdict(None) == "not measured"


def test_other_claims_flip_with_their_numbers(metrics):
    m = copy.deepcopy(metrics)
    m.update(pe_untouched_bit_identical_share=0.9, probe_auc=[0.6, 0.99, 0.99])
    v = _verdicts(m)
    assert v["pe_untouched_bit_identical"] == "does not hold" and v["probe_separates"] == "does not hold"
    m.update(pe_n_untouched=0, copy_rate_none=0.0)   # nothing left alone; nothing copies to begin with
    v = _verdicts(m)
    assert v["pe_untouched_bit_identical"] == "not measured" and v["pe_below_random_token"] == "not measured"


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["method_table"].splitlines()
    assert lines[0].startswith("| method (test half) | independent copy rate [95 % CI] | pixel Gu replication [95 % CI] "
                               "| nearest is planted (content-caption chance) |")
    assert lines[1] == "|---" * 11 + "|" and all(line.count("|") == 12 for line in lines)
    # no mitigation, the content caption alone, PE's whole sweep, then each baseline at its chosen value
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| no mitigation", "| content caption alone (chance reference)", "| wen_pe (l_target = 2.5)",
        "| wen_pe (l_target = 2)", "| random_token (tokens = 8)", "| lower_guidance (guidance_scale = 0)"]
    assert lines[2] == ("| no mitigation | 0.800 [0.700, 0.900] | 0.800 [0.750, 0.850] | 0.90 (0.25) | 1.00 / 0.70 / "
                        "0.70 | 0.900 | 0.600 / 0.590 | 0.680 / 0.660 | 0.130 (0.090) | 50 | 0.00 |")
    chosen = v["chosen_table"].splitlines()
    assert chosen[2] == ("| wen_pe (l_target = 2, dev choice; against no mitigation) | -0.300 [-0.450, -0.150] | "
                         "-0.300 [-0.450, -0.150] | -0.050 [-0.200, +0.100] | -0.300 [-0.450, -0.150] | "
                         "-0.050 [-0.200, +0.100] | does not hold |")
    assert chosen[3].startswith("| random_token (tokens = 8, registry default; against no mitigation)")
    assert chosen[3].endswith("| holds |") and chosen[5].startswith("| wen_filter (tau = 2.5, dev choice; against "
                                                                     "the unfiltered run)")
    f = v["filter_table"].splitlines()
    assert f[2] == ("| unfiltered (shipped run) | 0.800 [0.700, 0.900] | 0.800 [0.750, 0.850] | 0.90 (0.25) | "
                    "1.00 / 0.70 / 0.70 | 0.680 / 0.660 | 0.130 (0.090) | 0.900 | — | — |")
    assert f[3].startswith("| tau = 2.5 (p75 of ordinary rows; dev choice) | 0.400 [0.300, 0.500] | 0.500 ")
    assert f[3].endswith("| 0.400 | 30% | 60% |")
    s = v["seed_table"].splitlines()
    assert [line.split(" | ")[0] for line in s[2:]] == [
        "| seed 0: no mitigation", "| seed 0: wen_pe (l_target = 2)", "| seed 0: random_token (tokens = 8)",
        "| seed 0: lower_guidance (guidance_scale = 0)", "| seed 1: no mitigation",
        "| seed 1: wen_pe (l_target = 2), seed 0's dev choice", "| seed 1: wen_pe (l_target = 1.5), this seed's dev choice",
        "| seed 1: content caption alone (chance reference)"]
    assert s[7].endswith("| 0.90 (0.30) | 0.600 / 0.590 | -0.300 [-0.450, -0.150] | -0.300 [-0.450, -0.150] |")
    assert v["filter_group_changes"] == ("verbatim -0.300 [-0.450, -0.150], image_dup -0.050 [-0.200, +0.100], "
                                         "caption_dup -0.300 [-0.450, -0.150]")
    assert v["reduction_bar_complement"] == 0.5 and v["seed1_l_target_own"] == 1.5 and v["matched_levels"] == 2
    assert v["probe_auc_by_t"] == "t=50: 0.96, t=500: 0.99, t=950: 0.99" and v["probe_separating_t"] == "50, 500, 950"


def test_parts_a_run_lacks_are_not_a_number(metrics):
    for key in ("pe_operating_l_target", "pe_replication_rate", "pe_replication_reduction", "pe_clip_content",
                "pe_n_untouched", "pe_heldout_untouched_share", "pe_untouched_bit_identical_share", "pe_copy_rate",
                "chosen_points", "matched_utility_phrasings", "filter_paired", "filter_chosen_tau", "seeds",
                "content_reference", "nn_planted_chance"):
        del metrics[key]
    metrics.update(pe_vs_random_token_wins=None, filter_rows=[], filter_drops={}, filter_taus={})
    v = report.values(metrics)
    assert all(v[k] != v[k] for k in ("pe_operating_l_target", "pe_replication_rate", "pe_vs_random_token_wins",
                                      "filter_unfiltered_verbatim", "planted_share_of_rows", "pe_copy_rate",
                                      "filter_chosen_tau", "seed1_l_target_own", "nn_planted_chance"))
    assert len(v["filter_table"].splitlines()) == 2 and v["pe_copy_change"] == "n/a"
    for table in ("chosen_table", "seed_table"):
        assert v[table].splitlines()[2].startswith("| not measured in this run | n/a |")
    assert "| no mitigation | 0.800 [0.700, 0.900] | 0.800 [0.750, 0.850] | 0.90 | 1.00 / 0.70 / 0.70 |" in \
        v["method_table"]                                                      # no chance level: no brackets
    assert set(_verdicts(metrics).values()) == {"not measured", "holds"}


def _template() -> str:
    return (repo_root() / "docs" / "templates" / "03_mitigation.md").read_text().strip()


def _render(m, timings):
    return render(_template(), {**m, **report.values(m), "claims": {c.name: c for c in report.claims(m)},
                                "timings": timings})


def test_the_template_states_every_fixed_claim_with_its_verdict(metrics):
    block = _render(metrics, {"notebook_wall_s": 61.0})
    assert "{" not in block and "the whole notebook ran in 61 s" in block
    assert "copy rate 0.800 → 0.200 (paired change -0.300 [-0.450, -0.150])" in block
    assert "tau = 2.5. On the test half: copy rate 0.800 → 0.400" in block and "at most 50% of" in block
    named = {c.name for c in report.claims(metrics)} - {"random_token_hides_from_pixel_criterion",
                                                        "lower_guidance_hides_from_pixel_criterion"}
    for c in report.claims(metrics):   # the baselines' verdicts are in the chosen-point table
        if c.name in named:
            assert f"*{c.claim}*: **{c.verdict}**" in block, c.name


def test_the_template_renders_the_committed_metrics():
    """The committed metrics may predate the copy rate, the paired intervals and the second seed: those parts read
    n/a and "not measured", the rest keeps its numbers."""
    from memlib.harness.notebooks import BY_STEM
    from memlib.harness.report import paper_block

    assert BY_STEM["03_mitigation"].package == "memlib.wen.mitigation_report"
    m = json.loads((repo_root() / "figures" / "03_mitigation" / "metrics.json").read_text())["metrics"]
    block = paper_block("03_mitigation")
    assert block.startswith("| method (test half) |") and "{" not in block
    assert (f"pooled memorized pixel replication {m['replication_rate_none']:.3f} → {m['pe_replication_rate']:.3f} "
            f"({m['pe_replication_reduction']:.0%} lower") in block
    assert f"**PE at l_target = {m['pe_operating_l_target']:g}**" in block
    for r in m["filter_rows"][1:]:
        assert f"| tau = {r['value']:g} (p" in block
    assert ", ".join(f"t={t}: {a:.2f}" for t, a in zip(m["probe_timesteps"], m["probe_auc"])) in block
    for c in report.claims(m):
        if c.name in _template():
            assert f"*{c.claim}*: **{c.verdict}**" in block
