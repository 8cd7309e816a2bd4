"""Notebook 05's paired comparisons (PRSS, Chen et al., CVPR 2025) on hand-built rows: curves interpolated prompt by
prompt, matched-privacy and matched-utility intervals, PE's most private point, the per-method pixel-versus-copy
claim, the further seed's rows, and seconds kept out of the metrics."""
import json

import numpy as np
import pytest

from memlib.mitigate.columns import MethodRow
from memlib.mitigate.evalset import MEMORIZED_GROUPS
from memlib.paired_bootstrap import unit_mean
from memlib.prss import paired, report
from memlib.prss.results import OWN, PRSSResult, SOURCES, TRANSFER
from memlib.prss.seeds import SeedRun

N = 10                                                    # prompts per group
GROUPS = np.repeat(list(MEMORIZED_GROUPS) + ["heldout"], N)
UNITS = np.array([f"{g}-{i // 2 if g == 'image_dup' else i}" for g, i in zip(GROUPS, np.tile(np.arange(N), 4))])
MEM = GROUPS != "heldout"
RNG = np.random.default_rng(0)
NOISE = RNG.normal(0, 1, len(GROUPS))                     # shared by every row: the paired part cancels it


def fake_row(method, value, copy, rep, phr, content=None, nn=None, seconds=0.01, evals=50.0) -> MethodRow:
    """A scored row whose per-prompt columns are ``copy``, ``rep``, ``nn`` (memorized) and ``phr``, ``content``
    (every prompt) plus prompt noise shared by all rows."""
    def arr(v, scale):
        a = np.broadcast_to(np.asarray(v, float), GROUPS.shape).copy() + scale * NOISE
        return a
    per = {"copy": np.clip(arr(copy, 0.02), 0, 1), "replication": np.clip(arr(rep, 0.02), 0, 1),
           "nn_planted": np.clip(arr(rep if nn is None else nn, 0.02), 0, 1), "clip_phrasings": arr(phr, 0.03),
           "clip_content": arr(phr if content is None else content, 0.03), "similarity": arr(0.5, 0.0)}
    for k in ("copy", "replication", "nn_planted", "similarity"):
        per[k][~MEM] = np.nan
    pooled = {g: GROUPS == g for g in MEMORIZED_GROUPS} | {"memorized": MEM}
    sets = {"memorized": MEM, "heldout": ~MEM}

    def means(k, sel):
        return {g: float(per[k][s].mean()) for g, s in sel.items()}

    def cis(k, sel):
        return {g: unit_mean(per[k][s], UNITS[s])[1] for g, s in sel.items()}

    return MethodRow(method, "lambda", value, "test", {g: N for g in list(MEMORIZED_GROUPS) + ["heldout"]}, 2, 0,
                     means("replication", pooled), cis("replication", pooled), means("nn_planted", pooled),
                     means("similarity", pooled), means("similarity", pooled), means("clip_content", sets),
                     cis("clip_content", sets), means("clip_content", sets), means("clip_content", sets), {}, {},
                     0.0, seconds, evals, 0.0, 1.0, 0.0, {}, copy_rate=means("copy", pooled),
                     copy_rate_ci=cis("copy", pooled), lowpass_replication=means("replication", pooled),
                     clip_phrasings=means("clip_phrasings", sets), clip_phrasings_ci=cis("clip_phrasings", sets),
                     per_prompt=per, units=UNITS, groups=GROUPS)


LAMBDAS = [2.0, 1.0]


def _by_group(mem_value, held_value):
    return np.where(MEM, mem_value, held_value)


def curves_spec(prss_gain=0.05):
    """(copy, pixel, every-phrasing CLIP) per lambda for each curve: PE loses utility as it gets private; PRSS
    (both readings) gets as private with ``prss_gain`` more utility."""
    pe = [(0.5, 0.5, 0.58), (0.1, 0.1, 0.53)]
    return {"PE": pe,
            "PR alone": [(0.3, 0.3, 0.55), (0.0, 0.0, 0.45)],
            "SS alone": [(0.7, 0.7, 0.60), (0.5, 0.5, 0.59)],
            "PRSS": [(c, r, u + prss_gain) for c, r, u in pe],
            "SS alone, may drop trigger": [(0.6, 0.6, 0.61), (0.4, 0.4, 0.60)],
            "PRSS, may drop trigger": [(c, r, u + prss_gain) for c, r, u in pe]}


def synthetic_result(prss_gain=0.05, seed_rows=True, hide=False) -> PRSSResult:
    """A PRSSResult from hand-built rows; with ``hide``, SS alone's pixel replication falls while its copy rate
    stays at no mitigation's."""
    rows = {"none": fake_row("none", 0, 0.9, 0.9, _by_group(0.60, 0.70), evals=50, seconds=0.01)}
    curves = {}
    for curve, pts in curves_spec(prss_gain).items():
        curves[curve] = []
        for lam, (c, r, u) in zip(LAMBDAS, pts):
            if hide and curve == "SS alone":
                c = 0.9
            label = f"{curve} (lambda={lam:g})"
            rows[label] = fake_row(curve, lam, c, r, _by_group(u, 0.70), evals=80, seconds=0.02)
            curves[curve].append(label)
    operating = {"PR alone": 1.0, "PRSS": 1.0, "PRSS, may drop trigger": 1.0}
    dev_rows = {c: [fake_row(c, lam, 0.5, 0.5, 0.6) for lam in LAMBDAS] for c in operating}
    check = {"per_group": {g: {"original": {"n": N, "median": 3.0, "p10": 2.0, "p90": 4.0},
                               "keep": {"n": N, "median": 2.9, "p10": 2.0, "p90": 4.0},
                               "drop": {"n": N, "median": 0.9, "p10": 0.5, "p90": 1.0},
                               "keep_vs_original": {"estimate": -0.02, "ci95": [-0.05, 0.01], "n_prompts": N,
                                                    "n_units": N, "relative": True}}
                           for g in list(MEMORIZED_GROUPS) + ["heldout"]}}
    cfg = {"matched_levels": 4, "verbatim_bar": 0.05}
    content = fake_row("content_caption", 0, 0.05, 0.05, _by_group(0.6, 0.7), nn=0.2)
    res = PRSSResult(cfg, "t2i-test", LAMBDAS, [1.0, 2.0], [1.5, 2.5], operating, dev_rows, check,
                     {"verbatim": [3.0]}, rows, curves, {"curves": {}, "sources": {}}, content)
    late = {lb: np.full(int(MEM.sum()), 2.0) + 0.1 * NOISE[MEM] for lb in curves["PE"]}
    late.update({lb: np.full(int(MEM.sum()), 1.0) + 0.1 * NOISE[MEM] for lb in curves["PR alone"]})
    res.late = late
    res.steps = {lb: [1.0, 2.0] for lb in curves["PE"] + curves["PR alone"]}
    if seed_rows:
        srows = {"none": fake_row("none", 0, 0.8, 0.8, _by_group(0.6, 0.7))}
        for curve in operating:
            srows[f"{curve}, {TRANSFER}"] = fake_row(curve, 1.0, 0.3, 0.3, _by_group(0.58, 0.7))
        for curve in ("PRSS", "PRSS, may drop trigger"):
            srows[f"{curve}, {OWN}"] = fake_row(curve, 1.2, 0.8, 0.2, _by_group(0.58, 0.7))   # hides
        res.seeds = {1: SeedRun(1, "t2i-seed1", [2.1, 1.1], {"PRSS": 1.2, "PRSS, may drop trigger": 1.2},
                                {c: 1.0 for c in operating}, srows, content)}
    return res


def test_a_curve_interpolated_prompt_by_prompt_has_the_interpolated_mean():
    res = synthetic_result()
    own = {c: [res.rows[lb] for lb in labels] for c, labels in res.curves.items()}
    curve = paired.sorted_curve(own["PE"], res.rows["none"], "copy_rate")
    assert [r.value for r in curve] == [1.0, 2.0, 0]            # lowest copy rate first, no mitigation last
    xs = [paired.mean_of(r, "copy_rate") for r in curve]
    ys = [paired.mean_of(r, "clip_phrasings") for r in curve]
    for level in np.linspace(xs[0], xs[-1], 7):
        v = paired.at_level(curve, "copy_rate", "clip_phrasings", level)
        assert v.shape == (int(MEM.sum()),) and v.mean() == pytest.approx(np.interp(level, xs, ys))
    assert paired.at_level(curve, "copy_rate", "clip_phrasings", xs[-1] + 0.01) is None


def test_matched_privacy_flips_with_the_interval():
    def verdicts(gain):
        m = synthetic_result(gain).to_metrics()
        mp = m["comparisons"][next(iter(SOURCES))]["matched_privacy"]
        assert len(mp["levels"]) == 4 and len(mp["paired"]) == 4
        return {c.name: c.verdict for c in report.claims(m)}, mp

    v, mp = verdicts(0.05)                                       # PRSS 0.05 above PE at every level
    assert all(pd["ci95"][0] > 0 for pd in mp["paired"])
    assert mp["paired"][0]["estimate"] == pytest.approx(0.05, abs=1e-6)   # below PE's middle point: the full gain
    assert v["keep_prss_above_pe_at_matched_privacy"] == "holds"
    assert v["keep_prss_loses_at_most_half_of_pe_drop"] == "holds"
    v, mp = verdicts(-0.05)                                      # below everywhere
    assert v["keep_prss_above_pe_at_matched_privacy"] == "does not hold"
    v, mp = verdicts(0.0)                                        # the same curve: every interval straddles zero
    assert all(pd["ci95"][0] <= 0 <= pd["ci95"][1] for pd in mp["paired"])
    assert v["keep_prss_above_pe_at_matched_privacy"] == "not distinguishable"


def test_matched_utility_and_the_per_lambda_comparisons():
    m = synthetic_result(0.05).to_metrics()
    c = m["comparisons"]["trigger-keeping rewrites"]
    assert c["matched_utility"]["x"] == "clip_phrasings" and c["matched_utility"]["y"] == "copy_rate"
    v = {x.name: x.verdict for x in report.claims(m)}
    assert v["keep_prss_copies_less_at_matched_utility"] == "holds"   # same privacy at more utility
    assert v["keep_pr_most_privacy"] == "holds"                      # PR alone lowest at both lambda
    assert v["keep_ss_best_utility"] == "does not hold"              # PRSS beats SS alone at lambda 2
    assert c["pr_most_privacy"]["lambdas"] == LAMBDAS
    assert set(c["ss_best_utility"]["vs"]) == {"PE", "PR alone", "PRSS"}
    assert v["reanchoring_keeps_magnitude_low"] == "holds"           # PR's late magnitude 1 against PE's 2


def test_pe_most_private_point_out_of_prss_reach_does_not_hold():
    res = synthetic_result(0.05)
    for label in res.curves["PRSS"]:                                 # PRSS never below copy rate 0.5
        res.rows[label] = fake_row("PRSS", res.rows[label].value, 0.5, 0.5, 0.7)
    hd = res.to_metrics()["comparisons"]["trigger-keeping rewrites"]["half_drop"]
    assert hd["test"] is None and hd["reach"]["ci95"][0] > 0
    v = {c.name: c.verdict for c in report.claims(res.to_metrics())}
    assert v["keep_prss_loses_at_most_half_of_pe_drop"] == "does not hold"


def test_hiding_from_the_pixel_criterion_is_a_claim_per_method():
    v = {c.name: c.verdict for c in report.claims(synthetic_result(hide=True).to_metrics())}
    assert v["ss_hides_from_pixel_criterion"] == "holds" and v["ss_copy_falls"] == "not distinguishable"
    assert v["prss_hides_from_pixel_criterion"] == "does not hold" and v["prss_copy_falls"] == "holds"
    assert v["seed1_prss_own_hides_from_pixel_criterion"] == "holds"
    assert v["seed1_prss_transfer_copy_falls"] == "holds"
    assert v["seed1_prss_transfer_hides_from_pixel_criterion"] == "does not hold"
    v = {c.name: c.verdict for c in report.claims(synthetic_result(hide=False).to_metrics())}
    assert v["ss_hides_from_pixel_criterion"] == "does not hold"


def test_seconds_stay_out_of_the_metrics_and_the_metrics_repeat():
    res = synthetic_result()
    m = res.to_metrics()
    text = json.dumps(m, sort_keys=True, default=float)
    assert "seconds" not in text
    assert text == json.dumps(synthetic_result().to_metrics(), sort_keys=True, default=float)
    t = res.timings()
    n_rows = len(res.rows) + sum(map(len, res.dev_rows.values())) + 1 + len(res.seeds[1].all_rows())
    assert len(t["rows"]) == n_rows and all(r["seconds_per_image"] > 0 for r in t["rows"])
    assert t["prss_seconds_ratio"] == pytest.approx(2.0) and t["seconds_per_image_none"] == pytest.approx(0.01)
    assert set(m["seeds"]["1"]["points"]) == {f"{c}, {TRANSFER}" for c in res.operating_lambda} | {
        f"{c}, {OWN}" for c in ("PRSS", "PRSS, may drop trigger")}
    assert m["prss_copy_rate"] == pytest.approx(m["points"]["PRSS"]["copy_rate"])
    assert m["nn_chance"] == pytest.approx(res.content.nn_is_planted["memorized"])
