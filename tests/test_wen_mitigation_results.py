"""Notebook 03's dev-half operating points (PE's l_target, the filter's tau), the matched-utility comparisons of
PE with random tokens (``memlib.wen.mitigation_results``), the paired changes and what goes to metrics.json
versus timings.json, on hand-built rows whose answers are worked out by hand."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from memlib.generation import GenerationConfig
from memlib.mitigate.columns import MethodRow
from memlib.wen import mitigation_report as report
from memlib.wen.mitigation_results import (MitigationResult, SeedResult, matched_comparison, matched_paired,
                                           operating_point, paired_summary)


def _row(value, rep, clip=0.6, sim=0.8):
    return SimpleNamespace(value=value, replication={"memorized": rep}, clip_content={"memorized": clip},
                           similarity_mean={"memorized": sim})


def test_operating_point_is_the_largest_value_reaching_the_reduction():
    none = _row(0.0, 0.8)
    pe = [_row(2.71, 0.6), _row(2.26, 0.4), _row(1.8, 0.05), _row(1.35, 0.02)]
    assert operating_point(none, pe, 0.5) == 2.26        # 0.4 <= (1 - 0.5) x 0.8: at the bar counts
    assert operating_point(none, pe, 0.9) == 1.8         # 0.05 <= 0.08, 0.4 is not
    assert operating_point(none, pe[::-1], 0.5) == 2.26  # the order of the rows does not matter


def test_without_a_point_at_the_reduction_the_lowest_replication_wins():
    none = _row(0.0, 0.8)
    pe = [_row(2.71, 0.7), _row(2.26, 0.6), _row(1.8, 0.6)]
    assert operating_point(none, pe, 0.5) == 2.26        # ties at 0.6: the larger value
    assert operating_point(_row(0.0, 0.0), [_row(2.0, 0.0), _row(1.0, 0.0)], 0.5) == 2.0   # nothing copies
    assert operating_point(none, [], 0.5) is None


def test_matched_comparison_interpolates_both_curves_at_shared_utility():
    none = _row(0.0, 0.9, clip=0.62, sim=0.95)
    # PE's similarity falls 1:1 with content CLIP below 0.62; random tokens' lies 0.1 above it: PE wins every level
    pe = [_row(v, rep=c - 0.3, clip=c, sim=c + 0.33) for v, c in ((2.0, 0.58), (1.0, 0.50))]
    rt = [_row(v, rep=c - 0.2, clip=c, sim=c + 0.43) for v, c in ((1.0, 0.60), (8.0, 0.40))]
    out = matched_comparison(pe, rt, none, levels=3)
    assert out["levels"] == pytest.approx([0.53, 0.56, 0.59])        # inside [0.50, 0.62], the shared range
    assert out["similarity_pe"] == pytest.approx([0.86, 0.89, 0.92])
    assert np.allclose(np.array(out["similarity_random_token"]) - out["similarity_pe"], 0.1)
    # replication: 0.59 lies between PE's 0.58 (0.28) and no mitigation's 0.62 (0.90), a quarter of the way
    assert out["replication_pe"] == pytest.approx([0.23, 0.26, 0.28 + 0.25 * 0.62]) and out["wins"] == 3
    rt_better = [_row(v, rep=c - 0.2, clip=c, sim=c + 0.2) for v, c in ((1.0, 0.60), (8.0, 0.40))]
    assert matched_comparison(pe, rt_better, none, levels=3)["wins"] == 0


def test_matched_comparison_without_overlap_or_rows_says_so():
    none = _row(0.0, 0.9, clip=0.62)
    pe = [_row(1.0, 0.1, clip=0.65)]
    rt = [_row(1.0, 0.1, clip=0.30)]
    out = matched_comparison(pe, [_row(1.0, 0.1, clip=0.63)], _row(0.0, 0.9, clip=0.64), levels=2)
    assert out["wins"] is None and "do not overlap" in out["note"]
    assert matched_comparison([], rt, none)["wins"] is None and matched_comparison(pe, [], none)["levels"] == []


GROUPS = np.array(["verbatim"] * 4 + ["image_dup"] * 4 + ["heldout"] * 2)
UNITS = np.array(["p0", "p1", "p2", "p3", "p4", "p4", "p5", "p5", "c0", "c1"])   # two captions per duplicated image


def _prow(method, value, phrasings, copy, similarity=None, rep=None, clip=None):
    """A row with per-prompt values (10 prompts: 8 memorized, 2 held-out) and the means of its memorized ones."""
    copy = np.asarray(copy, float)
    per = {"copy": copy, "replication": copy if rep is None else np.asarray(rep, float),
           "similarity": copy if similarity is None else np.asarray(similarity, float),
           "nn_planted": copy, "clip_content": np.full(10, 0.5) if clip is None else np.asarray(clip, float),
           "clip_phrasings": np.full(10, 0.5) if clip is None else np.asarray(clip, float)}
    return SimpleNamespace(method=method, knob="k", value=value, clip_phrasings={"memorized": phrasings},
                           per_prompt=per, units=UNITS, groups=GROUPS)


def test_matched_paired_interpolates_each_prompt_and_pairs_pe_with_random_tokens():
    none = _prow("none", 0, 0.60, np.ones(10))
    # PE at CLIP 0.50 copies nothing; random tokens at CLIP 0.40 copy half the prompts: at CLIP 0.55 (levels=1)
    # PE sits halfway between none and its point (0.5 per prompt), random tokens a quarter of the way (0.75 or 1)
    pe = [_prow("wen_pe", 2.0, 0.50, np.zeros(10))]
    rt = [_prow("random_token", 8, 0.40, np.r_[np.zeros(4), np.ones(4), np.zeros(2)])]
    out = matched_paired(pe, rt, none, levels=1)
    assert out["levels"] == pytest.approx([0.55])
    assert out["copy_pe"] == pytest.approx([0.5]) and out["copy_random_token"] == pytest.approx([0.875])
    d = out["paired_copy"]
    assert d["estimate"] == pytest.approx(-0.375) and d["ci95"][1] < 0 and d["n_units"] == 6 and d["n_prompts"] == 8
    assert report.paired_verdict(d, "lower") == "holds"
    # PE that still copies the verbatim prompts: +0.25 on those, -0.25 on the rest, the interval straddles zero
    pe_half = [_prow("wen_pe", 2.0, 0.50, np.r_[np.ones(4), np.zeros(6)])]
    same = matched_paired(pe_half, [_prow("random_token", 8, 0.40, np.zeros(10))], none, levels=1)
    assert same["paired_copy"]["estimate"] == pytest.approx(0.0)
    assert same["paired_copy"]["ci95"][0] < 0 < same["paired_copy"]["ci95"][1]
    assert report.paired_verdict(same["paired_copy"], "lower") == "not distinguishable"
    above = [_prow("wen_pe", 2.0, 0.8, np.zeros(10))]      # both curves meet at no mitigation only
    assert "do not overlap" in matched_paired(above, [_prow("random_token", 8, 0.7, np.zeros(10))],
                                              _prow("none", 0, 0.75, np.ones(10)), levels=1)["note"]
    assert matched_paired([], rt, none)["paired_copy"] is None


def test_paired_summary_changes_each_column_over_the_same_prompts():
    base = _prow("none", 0, 0.6, np.ones(10), clip=np.full(10, 0.6))
    row = _prow("x", 1, 0.5, np.r_[np.zeros(4), np.ones(4), np.ones(2)], rep=np.zeros(10),
                clip=np.r_[np.full(8, 0.5), np.full(2, 0.7)])
    p = paired_summary(base, row)
    assert p["copy"]["estimate"] == pytest.approx(-0.5) and p["replication"]["estimate"] == pytest.approx(-1.0)
    assert p["replication_relative"]["estimate"] == pytest.approx(-1.0) and p["replication_relative"]["relative"]
    assert p["replication_verbatim"]["estimate"] == pytest.approx(-1.0) and p["replication_verbatim"]["n_units"] == 4
    assert p["clip_phrasings"]["estimate"] == pytest.approx(-0.1)
    assert p["clip_phrasings_heldout"]["estimate"] == pytest.approx(0.1) and p["clip_phrasings_heldout"]["n_prompts"] == 2
    assert p["replication_caption_dup"] is None                        # no caption-duplication prompts here
    assert paired_summary(_prow("none", 0, 0.6, np.zeros(10)), row)["replication_relative"] is None   # 0 copies


def _method_row(method, value, rep, copy, seconds, clip=0.6):
    """A full ``MethodRow`` (10 prompts, 2 generations) with per-prompt replication ``rep`` and copy ``copy``."""
    rep, copy = np.asarray(rep, float), np.asarray(copy, float)
    mem = np.isin(GROUPS, ("verbatim", "image_dup"))
    by = {"memorized": float(rep[mem].mean()), "verbatim": float(rep[:4].mean()), "image_dup": float(rep[4:8].mean())}
    ci = {k: (max(v - 0.1, 0.0), v + 0.1) for k, v in by.items()}
    sets = {"memorized": clip, "heldout": clip + 0.05}
    return MethodRow(method, "k", value, "test", {"verbatim": 4, "image_dup": 4, "heldout": 2}, 2, 0, by, ci,
                     dict(by), dict(by), dict(by), sets, {k: (v - 0.02, v + 0.02) for k, v in sets.items()}, sets,
                     sets, {"memorized": 0.3, "heldout": 0.2}, {"memorized": 0.1, "heldout": 0.1}, 0.0, seconds,
                     50.0 + value, 1.0, 1.0, 0.0, {}, copy_rate={"memorized": float(copy[mem].mean())},
                     copy_rate_ci={"memorized": (0.0, 1.0)}, lowpass_replication=dict(by), clip_phrasings=dict(sets),
                     clip_phrasings_ci={k: (v - 0.02, v + 0.02) for k, v in sets.items()},
                     per_prompt={"replication": rep, "copy": copy, "nn_planted": rep, "clip_content": np.full(10, clip),
                                 "clip_phrasings": np.full(10, clip), "similarity": rep},
                     units=UNITS, groups=GROUPS)


def _result(seconds=0.2):
    ones, zeros = np.ones(10), np.zeros(10)
    none = _method_row("none", 0, ones, ones, seconds)
    pe = _method_row("wen_pe", 2.0, zeros, np.r_[zeros[:8], ones[:2]], 0.3, clip=0.55)
    rt = _method_row("random_token", 8, zeros, ones, 0.25, clip=0.4)
    unf, filt = _method_row("unfiltered", 0, ones, ones, 0.2), _method_row("wen_filter", 2.5, ones, zeros, 0.2)
    ref = _method_row("content_caption", 0, zeros, zeros, 0.2)
    seed_none = _method_row("none", 0, ones, ones, 0.2)
    seed = SeedResult(1, "t2i-seed1", [2.0, 1.0], {"verbatim": np.ones(4)}, [seed_none], 1.0, 2.0,
                      {"none": seed_none, "pe_transfer": pe, "pe_own": pe}, ref,
                      {"pe_transfer": paired_summary(seed_none, pe), "pe_own": paired_summary(seed_none, pe)})
    return MitigationResult(
        rows=[none, rt, pe], l_targets=[2.0], dev_magnitudes={"verbatim": np.ones(4)}, dev_rows=[none, pe],
        pe_operating_l_target=2.0, zero_iteration=None, rebound={}, rebound_heldout={}, timesteps=[999],
        matched={"wins": None}, grid={}, probe=SimpleNamespace(timesteps=[50], auc=[0.9], n_planted=4),
        taus={75.0: 2.5}, filter_rows=[unf, filt], filter_drops={}, gen_cfg=GenerationConfig(n_gens=2),
        checkpoint="t2i-seed0", content_reference=ref, chosen={"wen_pe": pe, "random_token": rt},
        paired={"wen_pe": paired_summary(none, pe), "random_token": paired_summary(none, rt)},
        matched_paired=matched_paired([pe], [rt], none), filter_dev_rows=[unf, filt], filter_chosen_tau=2.5,
        filter_paired=paired_summary(unf, filt), seeds={1: seed}, reduction_bar=0.5)


def _keys(x):
    if isinstance(x, dict):
        return set(x) | {k for v in x.values() for k in _keys(v)}
    return {k for v in x for k in _keys(v)} if isinstance(x, list) else set()


def test_wall_clock_seconds_go_to_timings_and_the_metrics_do_not_move_with_them():
    res, slower = _result(), _result(seconds=9.0)
    m = res.to_metrics()
    assert not [k for k in _keys(m) if "second" in k]
    assert json.dumps(m, sort_keys=True, default=float) == json.dumps(slower.to_metrics(), sort_keys=True,
                                                                       default=float)
    assert all(m.get(key) is not None for key, _, _ in report.HEADLINES if key != "pe_untouched_bit_identical_share")
    t = res.timings()
    # every row scored once: test rows, dev rows, filter rows (test and dev, shared objects counted once), the
    # content reference and seed 1's rows (its PE row serves both roles)
    assert len(t["rows"]) == 7
    assert t["seconds_per_image_none"] == 0.2 and t["pe_seconds_ratio"] == pytest.approx(1.5)
    assert sum(r["images"] for r in t["rows"]) == 7 * 20


def test_the_metrics_carry_the_headline_paired_changes_and_verdicts():
    m = _result().to_metrics()
    assert m["copy_rate_none"] == 1.0 and m["pe_copy_rate"] == 0.0 and m["replication_rate_none"] == 1.0
    assert m["chosen_points"]["random_token"]["value"] == 8 and m["filter_chosen_tau"] == 2.5
    assert m["filter_copy_rate"] == 0.0 and m["filter_unfiltered_copy_rate"] == 1.0
    assert m["seeds"]["1"]["pe_transfer_l_target"] == 2.0 and m["seeds"]["1"]["nn_planted_chance"] == 0.0
    v = {c.name: c.verdict for c in report.claims(m)}
    # PE lowers both; random tokens lower pixel replication while every prompt still copies (they hide); the
    # filter lowers the copy rate while pixel replication does not move
    assert v["pe_lowers_copy_rate"] == v["pe_lowers_replication"] == "holds"
    assert v["wen_pe_hides_from_pixel_criterion"] == "does not hold"
    assert v["random_token_hides_from_pixel_criterion"] == "holds"
    assert v["filter_lowers_copy_rate"] == "holds" and v["filter_lowers_replication"] == "not distinguishable"
    assert v["wen_filter_hides_from_pixel_criterion"] == "not distinguishable"
    assert v["seed1_pe_transfer_lowers_copy_rate"] == "holds"
