"""Notebook 03 on a further testbed seed (``more_testbed_seeds``): seed 0's dev-chosen operating points carried
over to that seed's test half, its own dev-chosen l_target for Wen's PE, no mitigation and the content-caption
reference on the same prompts and noises, each compared with no mitigation by a paired interval."""
import numpy as np
import pytest

from memlib.config import ConfigError
from memlib.testbed.build import TestbedRef
from memlib.wen import mitigation_report as report
from memlib.wen.mitigation_study import MitigationConfig, seed_study

TINY = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)


def test_further_seeds_are_parsed_without_the_main_one():
    assert MitigationConfig(more_testbed_seeds="0,1,1, 2").extra_seeds() == [1, 2]
    assert MitigationConfig(more_testbed_seeds="").extra_seeds() == []
    with pytest.raises(ConfigError, match="more_testbed_seeds"):
        MitigationConfig(more_testbed_seeds="one")


@pytest.mark.slow
def test_a_second_seed_carries_seed_0s_choices_over_and_makes_its_own(tiny_testbed):
    cfg = MitigationConfig(testbed=TINY, n_gens=1, num_steps=2, max_prompts_per_group=2, heldout_prompts=2,
                           pe_points=2, baselines="random_token", progress=False)
    res = seed_study(cfg, 1, 0.05, cfg.generation_config())
    assert list(res.rows) == ["none", "pe_transfer", "pe_own", "random_token"]
    assert res.rows["pe_transfer"].value == 0.05 and res.transfer_l_target == 0.05
    assert res.rows["pe_own"].value == res.pe_operating_l_target in res.l_targets
    assert res.rows["random_token"].value == 8                       # the baseline's chosen value: its default
    assert res.checkpoint != tiny_testbed.folder.name               # seed 1's own UNet
    units = res.rows["none"].units
    assert all((r.units == units).all() for r in res.rows.values())  # the same prompts and noises
    assert set(res.content_reference.groups) <= {"verbatim", "image_dup", "caption_dup"}
    assert len(res.dev_rows) == 1 + len(res.l_targets) and {r.half for r in res.dev_rows} == {"dev"}
    m = res.to_metrics()
    assert set(m["paired"]) == {"pe_transfer", "pe_own", "random_token"}
    d = m["paired"]["pe_transfer"]["copy"]
    assert d["ci95"][0] <= d["estimate"] <= d["ci95"][1] and d["n_prompts"] == int(np.isin(
        res.rows["none"].groups, ("verbatim", "image_dup", "caption_dup")).sum())
    assert m["nn_planted_chance"] == res.content_reference.nn_is_planted["memorized"]
    verdicts = {c.name: c.verdict for c in report.claims({"rows": [], "probe_timesteps": [], "probe_auc": [],
                                                          "replication_rate_none": 0.0, "seeds": {"1": m}})}
    assert verdicts["seed1_pe_transfer_lowers_copy_rate"] != "not measured"
