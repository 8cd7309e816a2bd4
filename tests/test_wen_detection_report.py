"""Notebook 01's report: Wen et al.'s detection claims and the results block's tables come from the metrics dict
alone, and the page template renders from the committed metrics (Wen et al., ICLR 2024; Verma et al.)."""
import copy
import json

import pytest

from memlib.claims import render
from memlib.paths import repo_root
from memlib.wen import detection_report as report

SOURCES = ("heldout", "generic", "random")
TEMPLATE = repo_root() / "docs" / "templates" / "01_detection.md"


def _cell(auc, tpr=0.9, n_neg=128):
    return {"auc_first_step_1gen": auc, "auc_first_step_1gen_ci95": [auc - 0.02, min(auc + 0.01, 1.0)],
            "tpr1fpr_first_step_1gen": tpr, "tpr1fpr_first_step_1gen_ci95": [tpr - 0.1, min(tpr + 0.05, 1.0)],
            "tpr_statistic": "tpr_at_1fpr" if n_neg >= 100 else "tpr_at_zero_fp", "n_pos": 40, "n_neg": n_neg}


def _pooled(m, pre, tail, auc, tpr, stat="tpr_at_1fpr"):
    m.update({f"{pre}auc_{tail}": auc, f"{pre}auc_{tail}_ci95": [auc - 0.01, auc + 0.005],
              f"{pre}tpr1fpr_{tail}": tpr, f"{pre}tpr1fpr_{tail}_ci95": [tpr - 0.1, tpr + 0.05],
              f"{pre}tpr_statistic_{tail}": stat})


def _group_row(seed, group, auc, tpr):
    return {"seed": seed, "half": "test", "positives": group, "negatives": "heldout", "steps": "first", "gens": 1,
            "auc": auc, "tpr_at_1fpr": tpr, "tpr_statistic": "tpr_at_1fpr"}


@pytest.fixture
def metrics():
    """Two seeds where every claim holds: the first step clears the bar on each seed, the all-steps setting does at
    least as well, the first step beats the tiled-l2 baseline, generic captions are harder negatives than random
    tokens, and each group alone clears the bar."""
    aucs = {"heldout": 0.97, "generic": 0.96, "random": 0.99}
    m = {"hard_negatives": "heldout", "max_gens": 4, "n_testbed_seeds": 2, "testbed_seeds": [0, 1],
         "min_seed_auc_first_step_1gen": 0.96, "baseline_auc": 0.90, "baseline_auc_ci95": [0.85, 0.94],
         "baseline_tpr1fpr": 0.4, "baseline_tpr1fpr_ci95": [0.2, 0.6]}
    m["per_seed"] = {str(s): {"positives": ["verbatim", "image_dup"],
                              "replication": {"verbatim": 1.0, "image_dup": 0.8 + 0.1 * s, "heldout": 0.0},
                              **{f"vs_{src}": _cell(aucs[src] - 0.01 + 0.02 * s, n_neg=128 if src != "random" else 64)
                                 for src in SOURCES}} for s in (0, 1)}
    for src in SOURCES:
        pre = "" if src == "heldout" else f"vs_{src}_"
        _pooled(m, pre, "first_step_1gen", aucs[src], 0.8, "tpr_at_1fpr" if src != "random" else "tpr_at_zero_fp")
    _pooled(m, "", "all_steps_4gen", 0.98, 0.5)
    m["table"] = [_group_row(s, g, auc, tpr) for s in (0, 1)
                  for g, auc, tpr in (("verbatim", 0.99, 1.0), ("image_dup", 0.955 + 0.01 * s, 0.7 + 0.1 * s))]
    return m


def _verdicts(m):
    return {c.name: c.verdict for c in report.claims(m)}


def test_every_claim_holds_on_a_run_that_shows_it(metrics):
    assert _verdicts(metrics) == dict.fromkeys(
        ["auc_bar_every_seed", "all_steps_at_least_first_step", "beats_tiled_l2", "generic_harder_than_random",
         "every_group_meets_bar"], "holds")
    evidence = {c.name: c.evidence for c in report.claims(metrics)}
    assert evidence["auc_bar_every_seed"]["auc_per_seed"] == {"0": pytest.approx(0.96), "1": pytest.approx(0.98)}
    assert evidence["generic_harder_than_random"]["verma_sd14_auc_tpr"] == {"generic": [0.967, 0.740],
                                                                            "random": [1.000, 0.998]}
    assert evidence["every_group_meets_bar"]["auc_per_group"] == {"verbatim": 0.99, "image_dup": pytest.approx(0.96)}


@pytest.mark.parametrize("change, claim, word", [
    (lambda m: m.update(min_seed_auc_first_step_1gen=0.94), "auc_bar_every_seed", "does not hold"),
    (lambda m: m.update(auc_all_steps_4gen=0.96), "all_steps_at_least_first_step", "does not hold"),
    (lambda m: m.pop("auc_all_steps_4gen"), "all_steps_at_least_first_step", "not measured"),
    (lambda m: m.update(baseline_auc=0.98), "beats_tiled_l2", "does not hold"),
    (lambda m: m.update(vs_random_auc_first_step_1gen=0.95), "generic_harder_than_random", "does not hold"),
    (lambda m: m.pop("vs_generic_auc_first_step_1gen"), "generic_harder_than_random", "not measured"),
    (lambda m: m["table"][1].update(auc=0.90), "every_group_meets_bar", "does not hold"),
    (lambda m: m.update(table=[]), "every_group_meets_bar", "not measured"),
])
def test_each_claim_follows_its_own_evidence(metrics, change, claim, word):
    m = copy.deepcopy(metrics)
    change(m)
    verdicts = _verdicts(m)
    assert verdicts.pop(claim) == word
    assert set(verdicts.values()) == {"holds"}   # the others are untouched


def test_values_build_the_tables_from_metrics_alone(metrics):
    v = report.values(metrics)
    seed_rows = v["seed_table"].splitlines()
    assert len(seed_rows) == 2 + 3 * (2 + 1)   # header, then per source: each seed and the mean
    assert "| heldout | 1 | 0.980 [0.960, 0.990] | 0.900 [0.800, 0.950] | tpr_at_1fpr | 40 / 128 |" in seed_rows
    assert "| random | **mean of 2** | 0.990 [0.980, 0.995] | 0.800 [0.700, 0.850] | tpr_at_zero_fp | |" in seed_rows
    assert v["replication_table"].splitlines()[3] == "| 1 | 1.000 | 0.900 | 0.000 | verbatim, image_dup |"
    assert "| image_dup | 0.960 | 0.750 | TPR@1%FPR | 0.700 to 0.800 |" in v["group_table"]
    assert v["tpr_name"]["first_step_1gen"] == "TPR@1%FPR" and \
        v["tpr_name"]["vs_random_first_step_1gen"] == "TPR at zero FP"
    assert (v["auc_all_steps_g"], v["tpr_name_all_steps_g"]) == (0.98, "TPR@1%FPR")


def test_template_renders_a_hand_built_run(metrics):
    m = copy.deepcopy(metrics)
    values = {**m, **report.values(m), "claims": {c.name: c for c in report.claims(m)}}
    text = render(TEMPLATE.read_text(), values, where=str(TEMPLATE))
    assert "AUC 0.970 [0.960, 0.975], TPR@1%FPR 0.800 [0.700, 0.850]; lowest seed AUC 0.960" in text
    assert "Verma et al. on Stable Diffusion v1.4: 1.000 / 0.998" in text and "TPR at zero FP 0.800" in text
    assert "all steps with 4 generations, vs heldout: AUC 0.980 [0.970, 0.985]" in text
    assert "| verbatim | 0.990 | 1.000 |" in text


def test_committed_metrics_render_the_block_with_its_numbers():
    m = json.loads((repo_root() / "figures" / "01_detection" / "metrics.json").read_text())["metrics"]
    assert all(key in m for key, _, _ in report.HEADLINES)
    claims = {c.name: c for c in report.claims(m)}
    values = {**m, **report.values(m), "claims": claims}
    text = render(TEMPLATE.read_text(), values, where=str(TEMPLATE))
    hard = m["hard_negatives"]
    for number in (m["auc_first_step_1gen"], m["vs_generic_auc_first_step_1gen"], m["vs_random_auc_first_step_1gen"],
                   m[f"auc_all_steps_{m['max_gens']}gen"], m["baseline_auc"], m["min_seed_auc_first_step_1gen"]):
        assert f"AUC {number:.3f}" in text, number
    for claim in claims.values():
        assert f"*{claim.claim}*: **{claim.verdict}**" in text
    # the reversals of the papers on the testbed, as the first full run measured them
    assert claims["beats_tiled_l2"].verdict == ("does not hold" if m["baseline_auc"] > m["auc_first_step_1gen"]
                                                else "holds")
    assert claims["auc_bar_every_seed"].verdict == ("holds" if m["min_seed_auc_first_step_1gen"] >= 0.95
                                                    else "does not hold")
    for seed in m["testbed_seeds"]:
        c = m["per_seed"][str(seed)][f"vs_{hard}"]
        assert f"| {hard} | {seed} | {c['auc_first_step_1gen']:.3f} [" in text
        assert f"| {seed} | " in values["replication_table"]
    for group in m["per_seed"][str(m["testbed_seeds"][0])]["positives"]:
        assert f"| {group} | " in values["group_table"]
