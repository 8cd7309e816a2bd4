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


def test_the_default_runs_keep_their_shipped_folders_and_the_new_runs_are_added_beside_them():
    from memlib.ietagc.runs import run_folder
    from memlib.ietagc.study import IETAGCStudyConfig
    from memlib.paths import repo_root

    shipped = {p.name for p in (repo_root() / "checkpoints").glob("ietagc-*")}
    default = IETAGCStudyConfig().plan().specs()
    assert {run_folder(n, s).name for n, s in default.items()} <= shipped      # digests unchanged
    wider = IETAGCStudyConfig(seeds="0,1,2", component_seeds=True, budgets="0.25,0.5").plan().specs()
    assert set(wider) - set(default) == {f"{k}-s{s}" for k in ("baseline", "full", "iet", "agc", "msr")
                                         for s in (2,)} | {f"{k}-s1" for k in ("iet", "agc", "msr")} | \
        {"annealed-b750-s0", "annealed-b1500-s0"}
    assert all(wider[n] == default[n] for n in default)
    annealed = wider["annealed-b750-s0"]["baseline"]
    assert annealed["steps"] == 750 and wider["annealed-b750-s0"]["frontier"] == [750]   # its schedule ends there
    with pytest.raises(ConfigError):
        IETAGCStudyConfig(budgets="0.5,0.5").validate()


def test_two_level_intervals_resample_training_seeds_then_samples():
    from memlib.ietagc.seedlevel import seed_level, two_level

    same = two_level([np.full(50, 0.2), np.full(40, 0.2), np.full(60, 0.2)])
    assert same["estimate"] == pytest.approx(0.2) and same["ci95"] == pytest.approx([0.2, 0.2])
    split = two_level([np.full(50, 0.3), np.full(50, -0.3), np.full(50, 0.3)])
    assert split["estimate"] == pytest.approx(0.1) and split["ci95"][0] < 0 < split["ci95"][1]   # seeds disagree
    assert split["per_seed"] == pytest.approx([0.3, -0.3, 0.3]) and split["n_units"] == 3
    rng = np.random.default_rng(0)
    cols = {f"{k}-s{s}": {c: rng.random(30) < (0.6 if k == "baseline" else 0.1)
                          for c in ("copy_rate", "mem_score", "gu_replication", "nn_is_planted")}
            for k in ("baseline", "iet", "agc", "msr", "full") for s in (0, 1, 2)}
    kinds = {k: [f"{k}-s{s}" for s in (0, 1, 2)] for k in ("baseline", "iet", "agc", "msr", "full")}
    levels = seed_level(cols, kinds)
    first = levels["steps"][0]
    assert (first["from"], first["to"], first["seeds"]) == ("baseline", "iet", [0, 1, 2])
    assert first["copy_rate"]["ci95"][1] < 0                                     # a clear drop, every seed
    assert seed_level(cols, dict(kinds, iet=kinds["iet"][:1], agc=[], msr=[])) is None
