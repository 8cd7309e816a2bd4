"""memlib.metrics: ROC, the fast AUC / TPR, bootstrap intervals, and pooling over testbed seeds."""
import numpy as np
import pytest

from memlib.metrics import auc_and_tpr, bootstrap_mean, bootstrap_roc, roc, tpr_statistic_name


def test_roc_on_known_scores():
    r = roc([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    assert r.auc == pytest.approx(8 / 9)
    assert r.tpr_at_1fpr == pytest.approx(2 / 3)   # last ROC point with FPR < 1 %: threshold 0.8
    assert r.accuracy == pytest.approx(1 - (0 + 1 / 3) / 2)
    perfect = roc([5, 6], [1, 2, 3])
    assert perfect.auc == 1.0 and perfect.tpr_at_1fpr == 1.0
    with pytest.raises(ValueError, match="positives and negatives"):
        roc([], [1.0])


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
    from memlib.wen.detection_results import _pool

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
