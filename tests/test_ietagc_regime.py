"""Notebook 06's regime probe: the grid it trains, the fixed rule that picks a regime away from the floor, and
the under-fitting check against real held-out digits."""
import numpy as np
import pytest
import torch

from memlib.config import ConfigError
from memlib.ietagc.regime import RegimeProbeConfig, choose, qualifies
from memlib.ietagc.underfit import UnderfitCheck, nearest_sq_distance


def _point(copies, shards, rounds, copy_rate, mem, lo=None):
    return {"copies": copies, "shards": shards, "rounds": rounds, "local_steps": 3000 // (shards * rounds),
            "iet": {"copy_rate": copy_rate, "copy_rate_ci": [copy_rate - 0.02 if lo is None else lo, copy_rate + 0.02],
                    "mem_score": mem}}


REAL = {"copy_rate": 0.05, "mem_score": 0.03}


def test_the_grid_is_every_point_and_refuses_budgets_that_do_not_split():
    grid = RegimeProbeConfig().grid()
    assert len(grid) == 8 and {(p["shards"], p["rounds"], p["local_steps"]) for p in grid if p["copies"] == 30} == \
        {(2, 10, 150), (2, 30, 50), (4, 10, 75), (4, 30, 25)}
    with pytest.raises(ConfigError, match="does not split"):
        RegimeProbeConfig(steps=1000, rounds="30").grid()
    with pytest.raises(ConfigError):
        RegimeProbeConfig(copies="").validate()


def test_a_point_qualifies_only_when_iet_alone_copies_clearly_above_real_unseen_digits():
    assert qualifies(_point(30, 4, 10, 0.2, 0.1), REAL, 2.0)
    assert not qualifies(_point(30, 4, 10, 0.09, 0.1), REAL, 2.0)           # copy rate under 2 x real
    assert not qualifies(_point(30, 4, 10, 0.2, 0.05), REAL, 2.0)           # memorization score under 2 x real
    assert not qualifies(_point(30, 4, 10, 0.2, 0.1, lo=0.04), REAL, 2.0)   # interval reaches the real rate


def test_the_rule_prefers_the_papers_shards_then_its_local_steps_then_fewer_copies():
    points = [_point(100, 2, 10, 0.3, 0.2), _point(100, 4, 30, 0.2, 0.1), _point(100, 4, 10, 0.2, 0.1),
              _point(30, 4, 30, 0.2, 0.1), _point(30, 4, 10, 0.01, 0.0)]
    record = {"points": points, "real_heldout": {"30": REAL, "100": REAL}}
    assert choose(record, 2.0)["point"] == {"copies": 100, "shards": 4, "rounds": 10, "local_steps": 75}
    record["points"] = points[3:]
    assert choose(record, 2.0)["point"]["copies"] == 30
    record["points"] = points[4:]
    none = choose(record, 2.0)
    assert none["point"] is None and "widen the grid" in none["why"]


def test_underfitting_is_the_share_of_samples_farther_than_real_unseen_digits():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(200, 1, 8, 8, generator=g) * 2 - 1
    heldout = (train[:50] + 0.3 * torch.randn(50, 1, 8, 8, generator=g)).clamp(-1, 1)
    check = UnderfitCheck(heldout, train)
    assert check.reference()["farther_than_real_share"] == pytest.approx(0.5, abs=0.03)
    copies = check(train[:40])
    blurry = check(torch.zeros(40, 1, 8, 8) + 0.01 * torch.randn(40, 1, 8, 8, generator=g))
    assert copies["farther_than_real_share"] == 0.0
    assert blurry["farther_than_real_share"] > 0.9 or blurry["ratio_above_real_share"] > 0.9
    assert nearest_sq_distance(train[:3], train) == pytest.approx(np.zeros(3), abs=1e-9)
