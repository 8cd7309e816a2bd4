"""Notebook 04's report: AMG's claims and results tables come from the metrics dict alone, each "lower", "costs" or
"within" claim from its stored paired interval, and the page template renders from the committed metrics and from
a run with every new column (Chen, Liu, Xu, CVPR 2024)."""
import copy
import json

import pytest

from memlib.amg import report
from memlib.amg.report_tables import DESCRIPTOR_ROW, OWN, TRANSFER, WEN_PE_ROW
from memlib.paths import repo_root


def _p(est, lo, hi, relative=False):
    """A stored paired change (``PairedDifference.to_dict``)."""
    return {"estimate": est, "ci95": [lo, hi], "n_prompts": 40, "n_units": 20, "relative": relative}


LOWER, HIGHER, SAME = _p(-0.5, -0.6, -0.4), _p(0.1, 0.05, 0.15), _p(0.0, -0.05, 0.05)


def _row(rep, clip=0.6, clip_heldout=0.68, fd=0.13, groups=(0.0, 0.0, 0.0), copy=None):
    verbatim, image_dup, caption_dup = groups
    copy = rep if copy is None else copy
    return {"replication_memorized": rep, "replication_ci_memorized": [max(rep - 0.05, 0.0), rep + 0.05],
            "replication_verbatim": verbatim, "replication_image_dup": image_dup,
            "replication_caption_dup": caption_dup, "similarity_mean_memorized": 0.9,
            "copy_rate_memorized": copy, "copy_rate_ci_memorized": [max(copy - 0.05, 0.0), copy + 0.05],
            "lowpass_replication_memorized": rep, "nn_is_planted_memorized": 0.5, "clip_phrasings_memorized": clip,
            "clip_content_memorized": clip, "clip_content_heldout": clip_heldout, "frechet_heldout": fd,
            "frechet_floor_heldout": 0.09, "evals_per_image": 50.0}


def _digits(none, main, paired):
    score = lambda gu: {"gu_replication": gu, "gu_replication_ci": [gu - 0.01, gu + 0.01], "planted_replication": gu,
                        "copy_rate": gu, "copy_rate_ci": [gu - 0.01, gu + 0.01], "lowpass_replication": gu,
                        "nl2_below_1.4": 0.8, "nl2_p5": 0.2, "frechet": 2.5, "frechet_floor": 1.9, "fired_share": 0.3}
    return {"test": {"none": score(none), "AMG Main": score(main), "AMG Strong": score(main / 2)}, "main_c3": 10.0,
            "calibration": {"fire_share": 0.05}, "real_heldout_nl2_below_1_4": 0.7,
            "paired_vs_none": {"AMG Main": paired, "AMG Strong": paired}, "copy_detector": "copydetect-digits-x",
            "detector_data_matches": True}


# the verdicts of the fixture's run: AMG Main lowers both criteria (so it hides nothing), Strong and Wen's PE
# lower the pixel one alone, the released code's gating lowers neither distinguishably
EXPECTED = {"removes_copies": "holds", "lowers_copy_rate": "holds", "keeps_utility": "holds",
            "always_on_costs_utility": "holds", "constant_threshold_worse": "holds",
            "each_single_term_weaker": "holds", "descriptor_sigma_lowers_pixel_criteria": "holds",
            "extra_seed_transfer_lowers_copy_rate": "holds", "extra_seed_own_lowers_copy_rate": "not distinguishable",
            "digits_removes_copies": "holds", "amg_main_hides_from_pixel_criterion": "does not hold",
            "amg_strong_hides_from_pixel_criterion": "holds",
            "amg_code_gating_hides_from_pixel_criterion": "not distinguishable",
            "amg_c1_13_hides_from_pixel_criterion": "does not hold", "wen_pe_hides_from_pixel_criterion": "holds",
            "digits_uncond_hides_from_pixel_criterion": "does not hold",
            "digits_class_hides_from_pixel_criterion": "holds"}


@pytest.fixture
def metrics():
    rows = {"none": _row(0.85, 0.62, groups=(1.0, 0.7, 0.8)), "AMG Main": _row(0.01, 0.60, groups=(0.03, 0.0, 0.0)),
            "AMG Strong": _row(0.0, 0.55, copy=0.8), "AMG, released-code gating": _row(0.8, 0.6),
            "AMG, released-code c1 = 13": _row(0.3, 0.58, groups=(0.9, 0.0, 0.0)),
            "spe": _row(0.8, groups=(1.0, 0.6, 0.8)), "dup": _row(0.6, groups=(1.0, 0.4, 0.4)),
            "sim": _row(0.2, groups=(0.5, 0.02, 0.03)), "switch always on": _row(0.0, 0.5, clip_heldout=0.64),
            "constant threshold": _row(0.04, 0.60, groups=(0.1, 0.0, 0.0)),
            DESCRIPTOR_ROW: dict(_row(0.2, 0.6, copy=0.0), gamed_columns=["copy_rate"]), WEN_PE_ROW: _row(0.3)}
    vs_none = {k: {"copy": LOWER, "replication": LOWER, "lowpass": LOWER, "clip_phrasings_relative":
                   _p(-0.02, -0.04, 0.0, relative=True)} for k in rows if k != "none"}
    vs_none["AMG Strong"].update(copy=SAME)
    vs_none["AMG, released-code gating"].update(replication=SAME, copy=SAME)
    vs_none[WEN_PE_ROW].update(copy=HIGHER)
    term = lambda higher_in: dict({"copy": HIGHER}, **{f"copy_{g}": HIGHER if g == higher_in else SAME
                                                      for g in ("verbatim", "image_dup", "caption_dup")})
    vs_main = {"spe": term("verbatim"), "dup": term("image_dup"), "sim": term("verbatim"),
               "switch always on": {"clip_phrasings_heldout": _p(-0.05, -0.08, -0.02)},
               "constant threshold": {"copy": HIGHER, "replication": HIGHER, "clip_phrasings": SAME},
               WEN_PE_ROW: {"copy": HIGHER, "replication": HIGHER, "clip_phrasings_relative": _p(0.01, 0, 0.02, True)}}
    seed = {"rows": {"none": _row(0.8), TRANSFER: _row(0.1), OWN: _row(0.05)}, "transfer_c3": 300.0,
            "own_c3": 1000.0, "chance_nn_planted": 0.1, "paired_vs_none": {TRANSFER: {"copy": LOWER},
                                                                           OWN: {"copy": SAME}}}
    return {"rows": rows, "paired_vs_none": vs_none, "paired_vs_main": vs_main, "seeds": {"1": seed},
            "replication_rate_none": 0.85, "replication_rate_amg": 0.01, "replication_rate_amg_ci95": [0.0, 0.05],
            "copy_rate_none": 0.85, "copy_rate_amg": 0.01, "nn_is_planted_chance": 0.1,
            "clip_score_none": 0.62, "clip_score_amg": 0.60, "clip_content_change_amg": -0.032, "main_c3": 300.0,
            "main_schedule": "code", "digits_uncond_reduction": 0.86, "digits_class_reduction": 0.85,
            "descriptor_sigma": {"c3": 100.0, "paired_vs_pixel": {"copy": LOWER}},
            "digits": {"class-conditional": _digits(0.21, 0.03, {"gu": LOWER, "copy": SAME}),
                       "unconditional": _digits(0.22, 0.03, {"gu": LOWER, "copy": LOWER})}}


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_each_claim_reads_its_interval(metrics):
    assert _verdicts(metrics) == EXPECTED
    evidence = {c.name: c.evidence for c in report.claims(metrics)}
    assert evidence["removes_copies"]["replication_amg"] == 0.01
    assert evidence["lowers_copy_rate"]["copy_rate_change"] == LOWER
    assert evidence["each_single_term_weaker"]["groups_weaker"] == {"spe": ["verbatim"], "dup": ["image_dup"],
                                                                    "sim": ["verbatim"]}


def _set(path, value):
    def change(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return change


COUPLED = {"lowers_copy_rate": {"amg_main_hides_from_pixel_criterion"},
           "amg_main_hides_from_pixel_criterion": {"lowers_copy_rate"}}
MAIN_NONE, VS_MAIN, SEED = ("paired_vs_none", "AMG Main"), ("paired_vs_main",), ("seeds", "1", "paired_vs_none")


@pytest.mark.parametrize("change, claim, now", [
    (_set(MAIN_NONE + ("copy",), SAME), "lowers_copy_rate", "not distinguishable"),
    (_set(MAIN_NONE + ("copy",), HIGHER), "lowers_copy_rate", "does not hold"),
    (_set(MAIN_NONE + ("clip_phrasings_relative",), _p(-0.07, -0.08, -0.06, True)), "keeps_utility",
     "does not hold"),
    (_set(MAIN_NONE + ("clip_phrasings_relative",), _p(-0.04, -0.07, 0.0, True)), "keeps_utility",
     "not distinguishable"),
    (_set(VS_MAIN + ("switch always on", "clip_phrasings_heldout"), SAME), "always_on_costs_utility",
     "not distinguishable"),
    (_set(VS_MAIN + ("constant threshold", "copy"), SAME), "constant_threshold_worse", "not distinguishable"),
    (_set(VS_MAIN + ("constant threshold", "copy"), LOWER), "constant_threshold_worse", "does not hold"),
    (_set(VS_MAIN + ("spe", "copy_verbatim"), SAME), "each_single_term_weaker", "not distinguishable"),
    (_set(VS_MAIN + ("dup",), {"copy": LOWER, "copy_verbatim": SAME}), "each_single_term_weaker", "does not hold"),
    (_set(("paired_vs_none", DESCRIPTOR_ROW, "lowpass"), SAME), "descriptor_sigma_lowers_pixel_criteria",
     "not distinguishable"),
    (_set(("paired_vs_none", DESCRIPTOR_ROW, "replication"), HIGHER), "descriptor_sigma_lowers_pixel_criteria",
     "does not hold"),
    (_set(SEED + (TRANSFER, "copy"), HIGHER), "extra_seed_transfer_lowers_copy_rate", "does not hold"),
    (_set(SEED + (OWN, "copy"), LOWER), "extra_seed_own_lowers_copy_rate", "holds"),
    (_set(("paired_vs_none", "AMG Strong", "copy"), LOWER), "amg_strong_hides_from_pixel_criterion",
     "does not hold"),
    (_set(("paired_vs_none", "AMG Strong", "replication"), SAME), "amg_strong_hides_from_pixel_criterion",
     "not distinguishable"),
    (_set(("paired_vs_none", "AMG Main", "copy"), SAME), "amg_main_hides_from_pixel_criterion", "holds"),
    (_set(("digits", "unconditional", "paired_vs_none", "AMG Main", "copy"), SAME),
     "digits_uncond_hides_from_pixel_criterion", "holds"),
    (_set(("replication_rate_amg",), 0.05), "removes_copies", "does not hold"),
    (_set(("digits_class_reduction",), 0.5), "digits_removes_copies", "does not hold"),
])
def test_a_verdict_flips_with_its_interval(metrics, change, claim, now):
    m = copy.deepcopy(metrics)
    change(m)
    verdicts = _verdicts(m)
    assert verdicts.pop(claim) == now != EXPECTED[claim]
    coupled = COUPLED.get(claim, set())   # Main's copy-rate change decides two claims
    assert {k: v for k, v in verdicts.items() if k not in coupled} == \
        {k: v for k, v in EXPECTED.items() if k != claim and k not in coupled}


def test_a_run_without_paired_intervals_is_not_measured(metrics):
    for key in ("paired_vs_none", "paired_vs_main", "seeds"):
        del metrics[key]
    for d in metrics["digits"].values():
        del d["paired_vs_none"]
    verdicts = _verdicts(metrics)
    assert {k for k, v in verdicts.items() if v != "not measured"} == {"removes_copies", "digits_removes_copies"}


def test_no_verdict_on_removing_copies_where_nothing_copies_without_guidance(metrics):
    metrics.update(replication_rate_none=0.0, replication_rate_amg=0.0)
    assert _verdicts(metrics)["removes_copies"] == "not measured"


def test_values_build_the_tables_from_the_metrics_alone(metrics):
    v = report.values(metrics)
    lines = v["testbed_table"].splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| none", "| AMG Main", "| AMG Strong", "| AMG, released-code gating", "| AMG, released-code c1 = 13",
        "| spe", "| dup", "| sim", "| switch always on", "| constant threshold", f"| {DESCRIPTOR_ROW}",
        f"| {WEN_PE_ROW}"]
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # copy rate, pixel Gu, nearest-is-planted beside the content-caption chance, then the other columns
    assert ("| AMG Main | 0.010 [0.000, 0.060] | 0.010 [0.000, 0.060] | 0.50 (0.10) | 0.010 | 0.03 / 0.00 / 0.00 | "
            "0.900 | 0.600 | 0.600 | 0.680 | 0.130 (0.090) | 50 |") in lines
    assert "(gamed: it optimised this detector)" in next(line for line in lines if DESCRIPTOR_ROW in line)
    paired = v["paired_table"].splitlines()
    assert "| AMG Main | -0.500 [-0.600, -0.400] | -0.500 [-0.600, -0.400] | -0.500 [-0.600, -0.400] | n/a | " \
           "-2.0% [-4.0%, +0.0%] |" in paired
    seeds = v["seeds_table"].splitlines()
    assert seeds[5].startswith(f"| 1, {TRANSFER} | 300 | 0.100 [0.050, 0.150] |") and len(seeds) == 7
    assert all(line.count("|") == seeds[0].count("|") for line in seeds)
    assert "| unconditional, AMG Main | 0.030 [0.020, 0.040] | 0.030 [0.020, 0.040] |" in v["digits_table"]
    assert v["single_terms_weaker"] == "spe: verbatim; dup: image_dup; sim: verbatim"
    assert v["main_copy_change"] == "-0.500 [-0.600, -0.400]" and v["pe_vs_main_copy"] == "+0.100 [+0.050, +0.150]"
    assert v["extra_seed"] == "1" and v["extra_seed_own_c3"] == 1000.0 and v["digits_detector_same_data"] == "yes"
    # parts a run may lack are n/a (a string) or not a number, which the page shows as n/a
    assert v["matched_03_replication"] == "n/a" and v["guidance_1_verbatim"] != v["guidance_1_verbatim"]


def test_the_template_renders_a_run_with_every_column(metrics, tmp_path):
    from memlib.harness.report import paper_block

    folder = tmp_path / "04_amg"
    folder.mkdir()
    m = dict(metrics, strong_c3=1000.0, lowpass_replication_none=0.8, lowpass_replication_amg=0.01,
             clip_phrasings_none=0.63, clip_phrasings_amg=0.61, clip_heldout_amg=0.68, fd_none=0.13, fd_amg=0.13,
             fd_floor=0.09, switch_fired_heldout=0.0, evals_ratio_amg=1.4)
    (folder / "metrics.json").write_text(json.dumps({"metrics": m}))
    (folder / "timings.json").write_text(json.dumps({"seconds_ratio_amg": 1.75}))
    block = paper_block("04_amg", tmp_path)
    assert "{" not in block and "1.75× the seconds" in block
    for c in report.claims(m):
        assert f"**{c.verdict}**" in block
    assert "Its own copy rate, 0.000 (-0.500 [-0.600, -0.400]), is gamed" in block


def test_the_template_renders_the_committed_metrics():
    from memlib.harness.report import paper_block

    m = json.loads((repo_root() / "figures" / "04_amg" / "metrics.json").read_text())["metrics"]
    block = paper_block("04_amg")
    assert block.startswith("| AMG on the testbed (test half) |") and "{" not in block
    assert f"pixel Gu ratio goes {m['replication_rate_none']:.3f} → {m['replication_rate_amg']:.3f}" in block
    for c in report.claims(m):
        assert f"**{c.verdict}**" in block
    if "copy_rate_amg" not in m:   # a run before the copy detector: its columns are n/a, its claims not measured
        assert "calls n/a of memorized test generations" in block and "**not measured**" in block
