"""Notebook 03's dev-half operating point for Wen's PE and its matched-utility comparison with random tokens
(``memlib.wen.mitigation_results``), on hand-built rows whose answers are worked out by hand."""
from types import SimpleNamespace

import numpy as np
import pytest

from memlib.wen.mitigation_results import matched_comparison, pe_operating_point


def _row(value, rep, clip=0.6, sim=0.8):
    return SimpleNamespace(value=value, replication={"memorized": rep}, clip_content={"memorized": clip},
                           similarity_mean={"memorized": sim})


def test_operating_point_is_the_largest_l_target_reaching_the_reduction():
    none = _row(0.0, 0.8)
    pe = [_row(2.71, 0.6), _row(2.26, 0.4), _row(1.8, 0.05), _row(1.35, 0.02)]
    assert pe_operating_point(none, pe, 0.5) == 2.26        # 0.4 <= (1 - 0.5) x 0.8: at the bar counts
    assert pe_operating_point(none, pe, 0.9) == 1.8         # 0.05 <= 0.08, 0.4 is not
    assert pe_operating_point(none, pe[::-1], 0.5) == 2.26  # the order of the rows does not matter


def test_without_a_point_at_the_reduction_the_lowest_replication_wins():
    none = _row(0.0, 0.8)
    pe = [_row(2.71, 0.7), _row(2.26, 0.6), _row(1.8, 0.6)]
    assert pe_operating_point(none, pe, 0.5) == 2.26        # ties at 0.6: the larger l_target
    assert pe_operating_point(_row(0.0, 0.0), [_row(2.0, 0.0), _row(1.0, 0.0)], 0.5) == 2.0   # nothing copies
    assert pe_operating_point(none, [], 0.5) is None


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
