"""Notebook 06's study end to end on tiny runs: the three privacy columns and their pairing, and damaged run
files (truncated final weights rebuilt from the saved rounds; a damaged or emptied progress.json named)."""
import json
import os
import shutil

import numpy as np
import pytest

from memlib.checkpoint import CheckpointError
from memlib.paths import checkpoints_dir, repo_root

pytestmark = pytest.mark.slow

PARAMS = dict(steps=8, batch_size=8, shards=2, rounds=2, ranks=1, seeds="0", frontier_points=1, probe_samples=8,
              max_images=64, n_duplicated=2, copies=3, eval_samples=16, sample_steps=2, loss_noises=1,
              mem_threshold=0.15, long_factor=1, bigbatch=False)


def shipped_digits_detector() -> None:
    """The shipped digits copy detector in this session's checkpoints (training it takes minutes)."""
    from memlib.testbed.copy_detector import digits_detector_folder

    name = digits_detector_folder().name
    if not (checkpoints_dir() / name).exists():
        shutil.copytree(repo_root() / "checkpoints" / name, checkpoints_dir() / name)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from memlib.ietagc.study import IETAGCStudyConfig, run_study

    base = tmp_path_factory.getbasetemp()
    for var, sub in (("MEMLIB_CHECKPOINTS", "checkpoints"), ("MEMLIB_CACHE", "cache")):
        os.environ[var] = str(base / sub)      # as the per-test isolation sets them (module fixtures run first)
    shipped_digits_detector()
    cfg = IETAGCStudyConfig(**PARAMS)
    return cfg, run_study(cfg)


def test_every_run_is_scored_in_three_columns_paired_over_the_same_samples(study):
    cfg, res = study
    m = res.to_metrics()
    assert set(m["components"]) == {"baseline-s0", "iet-s0", "agc-s0", "msr-s0", "full-s0"}
    for n, r in m["components"].items():
        cols = res.columns[n]
        assert len(cols["copy_rate"]) == cfg.eval_samples
        for key in ("copy_rate", "mem_score", "gu_replication", "nn_is_planted"):   # the per-sample columns add up
            assert r[key] == pytest.approx(cols[key].mean()), (n, key)
        assert r["copy_rate_ci"][0] <= r["copy_rate"] <= r["copy_rate_ci"][1]
    pair = m["paired"]["full_vs_baseline"]["copy_rate"]
    assert pair["estimate"] == pytest.approx(m["copy_rate_full"] - m["copy_rate_baseline"])
    assert pair["n_units"] == cfg.eval_samples and m["copy_rate_change"] == pair["estimate"]
    step = m["component_steps"][0]
    assert (step["from"], step["to"]) == ("baseline-s0", "iet-s0")
    assert step["paired"]["mem_score"]["estimate"] == pytest.approx(step["mem_score_change"])
    held = res.columns["heldout_real"]
    assert m["copy_rate_heldout_real"] == pytest.approx(held["copy_rate"].mean())
    assert m["nn_is_planted_heldout_real"] == pytest.approx(held["nn_is_planted"].mean())
    det = m["copy_detector"]         # the shipped detector knows the default data; these runs train on fewer digits
    assert det["same_data"] is False and det["runs_data"]["max_images"] == 64 and 0 < det["heldout_seen_by_detector"]
    assert 0 < det["threshold"] < 1 and "seconds" not in str(det)
    # the probes recorded the copy rate too: the frontier on it is measured
    assert all(p["copy_rate"] is not None for p in m["frontier_points"]) and m["frontier_copy"]
    assert isinstance(m["frontier_test"]["full-s0"]["below_copy"], bool)
    assert not [k for k in _keys(m) if "second" in k or k.endswith("_s")]      # no wall-clock time


def _keys(d):
    if isinstance(d, dict):
        for k, v in d.items():
            yield k
            yield from _keys(v)
    elif isinstance(d, list):
        for v in d:
            yield from _keys(v)


def test_truncated_final_weights_are_rebuilt_to_the_same_metrics(study):
    from memlib.ietagc.study import run_study

    cfg, res = study
    folder = checkpoints_dir() / res.folders["agc-s0"]
    path = folder / "final" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.warns(UserWarning, match="final weights of run agc-s0 are damaged"):
        again = run_study(cfg)
    assert json.dumps(again.to_metrics(), sort_keys=True) == json.dumps(res.to_metrics(), sort_keys=True)
    assert len([p for p in folder.iterdir() if p.name.startswith("final.corrupt-")]) == 1   # kept, not deleted


@pytest.mark.parametrize("text, why", [("{\"round-000\": {\"round\": 0", "is damaged"), ("{}", "lacks the probes")])
def test_damaged_progress_stops_the_study_with_the_file_and_what_to_do(study, text, why):
    from memlib.ietagc.study import run_study

    cfg, res = study
    path = checkpoints_dir() / res.folders["msr-s0"] / "progress.json"
    good = path.read_text()
    path.write_text(text)
    try:
        with pytest.raises(CheckpointError, match=why) as e:
            run_study(cfg)
        assert str(path) in str(e.value) and "trains again" in str(e.value) and "\n" not in str(e.value)
    finally:
        path.write_text(good)
    assert np.isfinite(res.to_metrics()["components"]["msr-s0"]["mem_score"])


def test_every_run_gets_the_underfitting_check_against_real_unseen_digits(study):
    from memlib.ietagc import plots, report

    cfg, res = study
    m = res.to_metrics()
    ref = m["underfit_heldout_real"]
    assert ref["farther_than_real_share"] == pytest.approx(0.5, abs=0.05)
    for name, r in m["components"].items():
        q = r["d1_quantiles"]
        assert q == sorted(q) and 0 <= r["farther_than_real_share"] <= 1, name
    table = report.values(m)["underfit_table"].splitlines()
    assert len(table) == 2 + len(m["components"]) + 1 and table[-1].startswith("| real held-out digits")
    plots.plot_underfit(res)


def test_the_second_setting_trains_every_component_on_each_seed_and_judges_each_step_by_seed(tmp_path):
    from memlib.ietagc import regime_report
    from memlib.ietagc.study import IETAGCStudyConfig, run_study

    shipped_digits_detector()
    none, why = IETAGCStudyConfig(**PARAMS).regime_config()
    assert none is None and "regime = ''" in why
    missing, why = IETAGCStudyConfig(**PARAMS, regime="probe").regime_config(tmp_path / "absent.json")
    assert missing is None and "ietagc_regime_probe.py" in why
    (tmp_path / "probe.json").write_text(json.dumps({"chosen": {"point": {"copies": 4, "shards": 2, "rounds": 2,
                                                                          "local_steps": 2}, "why": "test"}}))
    cfg, why = IETAGCStudyConfig(**PARAMS, regime="probe", regime_seeds="0,1",
                                 regime_budgets="0.5").regime_config(tmp_path / "probe.json")
    assert (cfg.copies, cfg.shards, cfg.rounds, cfg.component_seeds, cfg.regime) == (4, 2, 2, True, "")
    m = run_study(cfg).to_metrics()
    assert {n.split("-")[0] for n in m["components"]} == {"baseline", "iet", "agc", "msr", "full", "annealed"}
    levels = m["seed_level"]
    assert [len(levels["means"][k]["copy_rate"]["per_seed"]) for k in ("baseline", "iet", "full")] == [2, 2, 2]
    assert [(s["from"], s["to"]) for s in levels["steps"]] == [("baseline", "iet"), ("iet", "agc"), ("agc", "msr"),
                                                                 ("msr", "full"), ("baseline", "full")]
    for s in levels["steps"]:
        lo, hi = s["copy_rate"]["ci95"]
        assert lo <= s["copy_rate"]["estimate"] <= hi and s["seeds"] == [0, 1]
    assert set(m["annealed_frontier"]["test"]) == {f"{k}-s{s}" for k in ("iet", "agc", "msr", "full") for s in (0, 1)}
    assert "annealed-b4-s0" in m["annealed_frontier"]["points"][0]["run"]
    names = [c.name for c in regime_report.claims(m)]
    assert "regime_away_from_floor" in names and "regime_full_vs_baseline" in names
    for table in (regime_report.seed_table, regime_report.steps_seed_table, regime_report.annealed_table):
        assert table(m).count("\n") >= 3
    with pytest.raises(Exception, match="regime_seeds"):
        IETAGCStudyConfig(**PARAMS, regime="4:2:2", regime_seeds="0").regime_config()
