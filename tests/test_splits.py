"""The reporting discipline of issue 22: a dev/test split fixed by seed, negatives by source, bootstrap
intervals, and pooling over testbed seeds."""
import numpy as np
import pytest

from memlib.metrics import auc_and_tpr, bootstrap_mean, bootstrap_roc, roc, tpr_statistic_name
from memlib.splits import dev_units, select, split


def test_split_is_fixed_by_seed_disjoint_and_halves_each_set():
    units = [f"u{i}" for i in range(41)]
    a, b = split(units, seed=0), split(list(reversed(units)), seed=0)
    assert set(a["dev"]) == set(b["dev"])                          # the order of the items does not matter
    assert set(a["dev"]).isdisjoint(a["test"]) and set(a["dev"]) | set(a["test"]) == set(units)
    assert len(a["dev"]) == 21 and len(a["test"]) == 20
    assert set(split(units, seed=1)["dev"]) != set(a["dev"])       # another seed, another split
    assert split(units, seed=0) == a                               # the same seed, the same split
    assert select(units, "all") == units
    with pytest.raises(ValueError, match="choose 'dev', 'test' or 'all'"):
        select(units, "train")


def test_items_sharing_a_unit_fall_on_one_side():
    items = [(u, k) for u in "abcdefgh" for k in range(4)]          # four phrasings of each combination
    halves = split(items, unit=lambda it: it[0], seed=3)
    for half in halves.values():
        for u, _ in half:
            assert sum(it[0] == u for it in half) == 4
    assert dev_units("abcdefgh", 3) == {u for u, _ in halves["dev"]}


def test_testbed_sources_and_their_units():
    from memlib.testbed.build import PRESETS
    from memlib.testbed.data import TEMPLATES, TestbedDataConfig, make_testbed_data
    from memlib.testbed.sources import negative_sources, split_unit

    data = make_testbed_data(TestbedDataConfig(seed=0, **PRESETS["tiny"]))
    src = negative_sources(data, n_random=10, n_generic=30)
    assert len(src["heldout"]) == len(data.combos_heldout) * len(TEMPLATES)
    assert len(src["random"]) == 10 and len({p.text for p in src["random"]}) == 10
    assert [p.text for p in src["random"][:len(data.prompts_in("random"))]] == \
        [p.text for p in data.prompts_in("random")]                  # the data's own come first
    generic = {p.text for p in src["generic"]}
    assert len(generic) == 30 and generic <= {c for c, g in zip(data.captions, data.group) if g == "generic"}
    assert not {p.text for p in src["heldout"]} & set(data.captions)  # held-out prompts were never trained on
    # the phrasings of one held-out combination share a unit, so they fall on one side of the split
    assert len({split_unit(p) for p in src["heldout"]}) == len(data.combos_heldout)
    planted = data.prompts_in("image_dup")
    assert split_unit(planted[0]) == split_unit(planted[1])          # two captions of one planted image
    again = negative_sources(data, n_random=10, n_generic=30)
    assert [p.text for p in again["generic"]] == [p.text for p in src["generic"]]


def test_fast_auc_and_tpr_equal_the_roc_curve_even_with_ties():
    rng = np.random.default_rng(0)
    for n_neg in (40, 100, 128, 300):
        for _ in range(50):
            pos, neg = np.round(rng.normal(1, 1, 25), 1), np.round(rng.normal(0, 1, n_neg), 1)
            r = roc(pos, neg)
            assert auc_and_tpr(pos, neg) == pytest.approx((r.auc, r.tpr_at_1fpr), abs=1e-12)
    # FPR must stay below 1 %: up to 100 negatives no false positive is allowed, from 101 on one is
    assert auc_and_tpr([2.0, 0.5], [1.0] + [0.0] * 99) == (pytest.approx(0.995), 0.5)
    assert auc_and_tpr([2.0, 0.5], [1.0] + [0.0] * 100) == (pytest.approx(201 / 202), 1.0)
    assert tpr_statistic_name(99) == "tpr_at_zero_fp" and tpr_statistic_name(100) == "tpr_at_1fpr"


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_more_prompts():
    rng = np.random.default_rng(1)
    small = bootstrap_roc(rng.normal(1, 1, 20), rng.normal(0, 1, 40), n_boot=300)
    big = bootstrap_roc(rng.normal(1, 1, 400), rng.normal(0, 1, 800), n_boot=300)
    for b in (small, big):
        assert b.auc_ci[0] <= b.auc <= b.auc_ci[1] and b.replicates.shape == (300, 2)
    assert big.auc_ci[1] - big.auc_ci[0] < small.auc_ci[1] - small.auc_ci[0]
    assert bootstrap_roc([1, 2], [0, 0.5], seed=4).auc_ci == bootstrap_roc([1, 2], [0, 0.5], seed=4).auc_ci
    m, (lo, hi), reps = bootstrap_mean([0, 1, 1, 1], n_boot=500)
    assert m == 0.75 and lo < 0.75 < hi and len(reps) == 500


def test_pooled_interval_is_that_of_the_mean_over_seeds():
    from memlib.wen.detect_results import _pool

    rng = np.random.default_rng(2)
    cells = []
    for shift in (1.0, 2.0, 3.0):
        b = bootstrap_roc(rng.normal(shift, 1, 30), rng.normal(0, 1, 150), n_boot=200)
        cells.append({"auc": b.auc, "tpr_at_1fpr": b.tpr, "n_neg": b.n_neg, "n_pos": b.n_pos,
                      "_replicates": b.replicates})
    p = _pool(cells)
    assert p["auc"] == pytest.approx(np.mean([c["auc"] for c in cells]))
    assert p["auc_seed_range"] == [min(c["auc"] for c in cells), max(c["auc"] for c in cells)]
    lo, hi = p["auc_ci95"]
    assert lo <= p["auc"] <= hi and p["tpr_statistic"] == "tpr_at_1fpr"
