"""Notebook 04's dev-half choice of c3 and its comparison with notebook 03's methods (``memlib.amg.analysis``), on
hand-built rows whose answers are worked out by hand."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from memlib.amg import report
from memlib.amg.analysis import choose_c3, fired_share, matched_to_notebook_03
from memlib.amg.study import AMGStudyConfig


def _row(value, rep, clip, sim=0.8, copy=None):
    return SimpleNamespace(value=value, replication={"memorized": rep}, clip_content={"memorized": clip},
                           similarity_mean={"memorized": sim}, copy_rate={"memorized": rep if copy is None else copy},
                           clip_phrasings={})


SWEEP = [10.0, 30.0, 100.0, 300.0, 1000.0]


def _sweep(reps, clips):
    return [_row(c, r, k) for c, r, k in zip(SWEEP, reps, clips)]


def test_main_is_the_smallest_c3_at_the_bar_and_strong_the_next():
    rows = {"code": _sweep([0.6, 0.4, 0.03, 0.0, 0.0], [0.6, 0.59, 0.56, 0.55, 0.53])}
    assert choose_c3(rows, SWEEP, 0.02) == ("code", 300.0, 1000.0)
    assert choose_c3(rows, SWEEP, 0.03) == ("code", 100.0, 300.0)      # at the bar counts
    # the strongest value reaching the bar has no next one: Strong stays there
    rows = {"code": _sweep([0.6, 0.4, 0.3, 0.1, 0.0], [0.6] * 5)}
    assert choose_c3(rows, SWEEP, 0.02) == ("code", 1000.0, 1000.0)


def test_of_the_schedules_reaching_the_bar_main_keeps_more_content_clip():
    rows = {"code": _sweep([0.6, 0.4, 0.3, 0.0, 0.0], [0.6, 0.59, 0.56, 0.55, 0.53]),
            "constant": _sweep([0.6, 0.4, 0.01, 0.0, 0.0], [0.6, 0.58, 0.50, 0.40, 0.2])}
    assert choose_c3(rows, SWEEP, 0.02) == ("code", 300.0, 1000.0)     # 0.55 at 300 beats 0.50 at 100
    rows["constant"][2] = _row(100.0, 0.01, 0.56)
    assert choose_c3(rows, SWEEP, 0.02) == ("constant", 100.0, 300.0)


def test_the_descriptor_variant_chooses_c3_on_the_copy_rate():
    # pixel replication reaches the bar at 100, the copy rate only at 1000
    rows = {"code": [_row(c, r, 0.6, copy=k) for c, r, k in zip(SWEEP, [0.6, 0.4, 0.0, 0.0, 0.0],
                                                               [0.7, 0.6, 0.5, 0.3, 0.01])]}
    assert choose_c3(rows, SWEEP, 0.02) == ("code", 100.0, 300.0)
    assert choose_c3(rows, SWEEP, 0.02, column="copy") == ("code", 1000.0, 1000.0)
    with pytest.raises(ValueError, match="privacy column"):
        choose_c3(rows, SWEEP, 0.02, column="ncc")


def test_the_switch_fired_share_counts_generations_firing_at_any_step():
    fired = np.zeros((3, 2, 4))
    fired[0, 1, 1] = 1          # a held-out generation fires once, at its second step
    fired[2, :, 0] = np.nan     # steps that recorded nothing count as not fired
    groups = ["heldout", "heldout", "verbatim"]
    assert fired_share(fired, groups) == 0.25 and fired_share(fired, groups, "memorized") == 0.0


def test_without_a_value_at_the_bar_main_is_the_lowest_replication():
    rows = {"code": _sweep([0.6, 0.4, 0.3, 0.2, 0.1], [0.6, 0.59, 0.56, 0.55, 0.53]),
            "constant": _sweep([0.6, 0.5, 0.1, 0.3, 0.2], [0.6, 0.58, 0.57, 0.40, 0.2])}
    assert choose_c3(rows, SWEEP, 0.02) == ("constant", 100.0, 300.0)  # ties at 0.1: the higher CLIP


def _committed_03(tmp_path, cfg):
    """Notebook 03's metrics file, with no mitigation, two PE points and two random-token points."""
    row = lambda method, knob, value, clip, rep, sim: {
        "method": method, "knob": knob, "value": value, "clip_content_memorized": clip, "replication_memorized": rep,
        "similarity_mean_memorized": sim}
    rows = [row("none", "none", 0.0, 0.62, 0.86, 0.95),
            row("wen_pe", "l_target", 2.26, 0.61, 0.28, 0.80), row("wen_pe", "l_target", 0.9, 0.55, 0.01, 0.38),
            row("random_token", "tokens", 1.0, 0.60, 0.62, 0.82), row("random_token", "tokens", 8.0, 0.36, 0.05, 0.29)]
    params = {k: getattr(cfg, k) for k in ("n_gens", "num_steps", "guidance_scale", "heldout_prompts", "seed",
                                           "max_prompts_per_group")}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"metrics": {"rows": rows},
                                "provenance": {"parameters": params, "git_commit": "abcdef1234567"}}))
    return path


def test_notebook_03s_methods_at_amg_mains_utility_and_at_its_privacy(tmp_path):
    cfg = AMGStudyConfig()
    amg = _row(300.0, 0.02, 0.54, 0.85)
    out = matched_to_notebook_03(SimpleNamespace(rows={"AMG Main": amg}), cfg, _committed_03(tmp_path, cfg))
    assert out["available"] and out["clip_level"] == 0.54 and out["replication_level"] == 0.02
    pe, rt = out["methods"]["wen_pe"], out["methods"]["random_token"]
    # matched utility: PE's lowest content CLIP (0.55) stays above AMG's 0.54, so no value there, but its range
    # and its nearest point; random tokens reach it: (0.54 - 0.36) / (0.60 - 0.36) of the way from 0.05 to 0.62
    assert pe["replication"] is None and pe["clip_range"] == [0.55, 0.62]
    assert pe["nearest"] == {"knob": "l_target", "value": 0.9, "clip_content": 0.55, "replication": 0.01,
                             "copy_rate": None, "similarity": 0.38}
    # notebook 03's run measured neither the copy rate nor every-phrasing CLIP: content CLIP is the utility
    assert out["utility"] == "clip_content" and pe["copy_rate"] is None and "clip_at_amg_copy_rate" not in pe
    assert rt["replication"] == pytest.approx(0.05 + 0.75 * 0.57)
    assert rt["similarity"] == pytest.approx(0.29 + 0.75 * (0.82 - 0.29))
    # matched privacy: PE passes AMG's replication 0.02 between 0.01 (CLIP 0.55) and 0.28 (CLIP 0.61)
    assert pe["clip_at_amg_replication"] == pytest.approx(0.55 + (0.01 / 0.27) * 0.06)
    assert rt["clip_at_amg_replication"] is None and rt["replication_range"] == [0.05, 0.86]
    # the page's sentence names every method, PE included
    m = {"matched_to_03": out}
    v = report._matched_values(m)
    assert v["matched_03_replication"] == ("random_token 0.478, wen_pe outside its curve (utility 0.550–0.620; "
                                           "its nearest point, l_target = 0.9, copies 0.010 at utility 0.550)")
    assert v["matched_03_clip"] == ("wen_pe 0.552, random_token outside its curve (replication 0.050–0.860)")
    assert v["matched_03_copy"] == v["matched_03_clip_at_copy"] == "— (not measured in this run)"
    assert v["matched_03_utility"] == "clip content"


def test_matched_on_every_phrasing_clip_and_the_copy_rate_where_notebook_03_measured_them(tmp_path):
    cfg = AMGStudyConfig()
    path = _committed_03(tmp_path, cfg)
    doc = json.loads(path.read_text())
    for r in doc["metrics"]["rows"]:   # every-phrasing CLIP 0.01 above content CLIP; copy rate = 0.9 x replication
        r.update(clip_phrasings_memorized=r["clip_content_memorized"] + 0.01,
                 copy_rate_memorized=0.9 * r["replication_memorized"])
    path.write_text(json.dumps(doc))
    amg = _row(300.0, 0.02, 0.54, 0.85, copy=0.1)
    amg.clip_phrasings = {"memorized": 0.55}
    out = matched_to_notebook_03(SimpleNamespace(rows={"AMG Main": amg}), cfg, path)
    rt, pe = out["methods"]["random_token"], out["methods"]["wen_pe"]
    assert out["utility"] == "clip_phrasings" and out["clip_level"] == 0.55 and out["copy_rate_level"] == 0.1
    assert rt["replication"] == pytest.approx(0.05 + 0.75 * 0.57) and rt["copy_rate"] == pytest.approx(
        0.9 * (0.05 + 0.75 * 0.57))
    # matched privacy on the copy rate: PE's curve passes 0.1 between 0.009 (0.56) and 0.252 (0.62)
    assert pe["clip_at_amg_copy_rate"] == pytest.approx(0.56 + (0.1 - 0.009) / (0.252 - 0.009) * 0.06)
    assert pe["copy_rate_range"] == pytest.approx([0.009, 0.774])


def test_no_comparison_when_notebook_03_ran_other_settings(tmp_path):
    cfg = AMGStudyConfig()
    path = _committed_03(tmp_path, cfg)
    out = matched_to_notebook_03(SimpleNamespace(rows={}), AMGStudyConfig(n_gens=2), path)
    assert not out["available"] and "n_gens" in out["reason"]
    assert report._matched_values({"matched_to_03": out})["matched_03_replication"] == "n/a"
