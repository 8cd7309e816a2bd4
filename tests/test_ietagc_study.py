"""IET-AGC+'s TAA step, the digits memorization ratio, the frontier test and the run plan of notebook 06."""
import pytest
import torch

from memlib.ietagc.agc import AGCHook
from memlib.ietagc.taa import TAAStep, rand_augment
from memlib.train import Batch, Losses


def test_rand_augment_is_seeded_keeps_shape_and_range_and_changes_digits():
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    a, b = rand_augment(x, 5, seed=3), rand_augment(x, 5, seed=3)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, rand_augment(x, 5, seed=4))


def test_taa_queues_kept_samples_until_a_batch_then_drops_the_rest():
    agc = AGCHook(r=2.0, beta=0.8, n_timesteps=10)
    images = torch.linspace(-1, 1, 20 * 64).reshape(20, 1, 8, 8)
    seen = []

    def loss_on(x, gen):
        seen.append(x.shape[0])
        return Losses((x ** 2).flatten(1).mean(1))

    taa, state, gen = TAAStep(agc, images, loss_on, batch_size=4), {}, torch.Generator().manual_seed(0)
    assert taa(0, gen, state) is None                               # nothing seen yet
    agc(Batch(0, torch.arange(3), Losses(torch.ones(3), torch.tensor([1, 2, 3])), state))
    assert taa(0, gen, state) is None and len(state["taa_rows"]) == 3
    agc(Batch(1, torch.arange(3, 6), Losses(torch.ones(3), torch.tensor([4, 5, 6])), state))
    loss = taa(1, gen, state)
    assert loss is not None and seen == [4] and len(state["taa_rows"]) == 0    # 6 queued: 4 used, 2 dropped
    assert int(state["taa_steps"]) == 1
    with pytest.raises(ValueError, match="batch_size"):
        TAAStep(agc, images, loss_on, batch_size=0)


@pytest.mark.slow
def test_memorization_ratio_calls_a_copy_memorized_and_calibrates_on_real_unseen_digits():
    from memlib.mitigate.digits import MQ_THRESHOLDS, DigitsScorer, mq_ratio
    from memlib.testbed.digits import DigitsDataConfig, make_digits_data

    train = torch.rand(80, 1, 8, 8)
    r = mq_ratio(torch.cat([train[:2], torch.rand(3, 1, 8, 8)]), train)
    assert r[0] == pytest.approx(0, abs=1e-9) and r[1] == pytest.approx(0, abs=1e-9) and (r[2:] > 0.1).all()
    scorer = DigitsScorer(make_digits_data(DigitsDataConfig()))
    tau = scorer.calibrated_threshold(0.05)
    held = scorer.memorization(scorer.data.heldout_images, threshold=tau)
    assert tau in MQ_THRESHOLDS and held["mem_score"] <= 0.05 and held["mem_threshold"] == tau
    m = scorer.memorization(scorer.unique[:10], threshold=tau)       # training digits themselves: all copies
    assert m["mem_score"] == 1.0 and m["mq_counts"]["0.15"] == 10


def test_frontier_is_the_pareto_set_and_interpolates_between_its_points():
    from memlib.ietagc.frontier import frontier_mem_at, pareto

    pts = [{"frechet": 10, "mem_score": 0.0}, {"frechet": 5, "mem_score": 0.2}, {"frechet": 6, "mem_score": 0.3},
           {"frechet": 3, "mem_score": 0.4}]
    front = pareto(pts)
    assert [(p["frechet"], p["mem_score"]) for p in front] == [(3, 0.4), (5, 0.2), (10, 0.0)]   # (6, 0.3) beaten
    assert frontier_mem_at(4, front) == pytest.approx(0.3) and frontier_mem_at(2, front) == 0.4
    assert frontier_mem_at(12, front) == 0.0


def test_run_plan_gives_every_run_the_same_probe_visits_and_rejects_uneven_splits():
    from memlib.config import ConfigError
    from memlib.ietagc.runs import RunPlan, run_folder
    from memlib.ietagc.study import IETAGCStudyConfig

    specs = RunPlan(steps=400, batch=8, shards=4, rounds=5, seeds=(0, 1)).specs()
    assert list(specs) == ["baseline-s0", "full-s0", "iet-s0", "agc-s0", "msr-s0", "baseline-s1", "full-s1",
                           "long-s0", "bigbatch-s0"]
    for name, spec in specs.items():
        if "iet" in spec:
            i = spec["iet"]
            assert i["shards"] * i["rounds"] * i["steps_per_round"] * i["batch_size"] == 400 * 8, name
        else:
            assert spec["baseline"]["steps"] * spec["baseline"]["batch_size"] == 400 * 8 * (2 if "long" in name else 1)
    assert specs["full-s0"]["iet"]["taa"] and not specs["msr-s0"]["iet"].get("taa")
    assert run_folder("full-s0", specs["full-s0"]) != run_folder("full-s1", specs["full-s1"])
    with pytest.raises((ValueError, ConfigError), match="split evenly"):
        RunPlan(steps=401, shards=4, rounds=5)
    with pytest.raises((ValueError, ConfigError), match="mem_threshold"):
        IETAGCStudyConfig(mem_threshold=0.25)
    with pytest.raises((ValueError, ConfigError), match="seeds"):
        IETAGCStudyConfig(seeds="zero")


@pytest.mark.parametrize("bad, named", [
    (dict(loss_noises=0), "loss_noises"), (dict(steps=0), "steps"), (dict(steps=-40), "steps"),
    (dict(batch_size=0), "batch_size"), (dict(probe_samples=0), "probe_samples"), (dict(copies=0), "copies"),
    (dict(n_duplicated=0), "n_duplicated"), (dict(max_images=-1), "max_images"), (dict(long_factor=0), "long_factor"),
    (dict(long_factor=-2), "long_factor"), (dict(block_out_channels=""), "block_out_channels"),
    (dict(block_out_channels=" , "), "block_out_channels"), (dict(max_images=10), "n_duplicated")])
def test_config_refuses_parameters_that_would_train_or_score_nothing(bad, named, monkeypatch):
    import memlib.ietagc.study as study
    from memlib.ietagc.study import IETAGCStudyConfig

    monkeypatch.setattr(study, "make_unconditional_unet", None)     # refused before any model is built
    with pytest.raises(ValueError, match=f"parameter '{named}'") as e:
        IETAGCStudyConfig(**bad)
    assert "\n" not in str(e.value)


def test_every_parameter_of_the_config_is_in_the_notebooks_parameters_cell():
    import dataclasses
    import json

    from memlib.ietagc.study import IETAGCStudyConfig
    from memlib.paths import repo_root

    nb = json.loads((repo_root() / "notebooks" / "06_ietagc.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = [ln.split("=")[0].strip() for ln in "".join(cell["source"]).splitlines() if ln and not ln.startswith("#")]
    assert names == [f.name for f in dataclasses.fields(IETAGCStudyConfig)]   # papermill knows every quick one
