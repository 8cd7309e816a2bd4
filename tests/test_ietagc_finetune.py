"""The fine-tuning analogue of IET-AGC+'s headline on the text testbed: both arms at equal sample visits from the
same weights, scored in the three privacy columns with IET-AGC paired against plain fine-tuning."""
import pytest

from memlib.config import ConfigError
from memlib.ietagc.finetune_study import FinetuneConfig

TINY = dict(testbed_preset="tiny", testbed_train_steps=6, testbed_batch_size=8, testbed_clip_steps=4, steps=8,
            batch_size=8, shards=2, rounds=2, ranks=1, n_gens=1, num_steps=2, heldout_prompts=2,
            max_prompts_per_group=1)


def test_both_arms_see_the_same_rows_as_often_and_start_from_the_base_model():
    specs = FinetuneConfig(seeds="0,1").specs()
    assert set(specs) == {"ft-plain-s0", "ft-ietagc-s0", "ft-plain-s1", "ft-ietagc-s1"}
    plain, iet = specs["ft-plain-s0"], specs["ft-ietagc-s0"]
    visits = plain["train"]["steps"] * plain["train"]["batch_size"]
    i = iet["iet"]
    assert i["shards"] * i["rounds"] * i["steps_per_round"] * i["batch_size"] == visits
    assert plain["finetune"] == iet["finetune"] and plain["finetune"]["base"]["seed"] == 0
    assert plain["finetune"]["data"]["seed"] == 1 and i["agc"] and i["msr"] and "taa" not in i
    for bad in (dict(data_seed=0), dict(steps=601), dict(seeds=""), dict(lr=0.0)):
        with pytest.raises(ConfigError):
            FinetuneConfig(**bad).validate()


@pytest.mark.slow
def test_the_tiny_analogue_trains_both_arms_and_pairs_them(tiny_testbed):
    from memlib.ietagc.finetune_study import run_finetune_study
    from memlib.ietagc.runs import code_changes

    m = run_finetune_study(FinetuneConfig(**TINY), progress=False)
    assert set(m["rows"]) == {"before", "data_testbed", "ft-plain-s0", "ft-ietagc-s0"}
    for name, r in m["rows"].items():
        assert 0 <= r["copy_rate_memorized"] <= 1 and -1 <= r["sim_p95"] <= 1, name
    pair = m["paired_ietagc_minus_plain"]["s0"]["copy"]
    d = m["rows"]["ft-ietagc-s0"]["copy_rate_memorized"] - m["rows"]["ft-plain-s0"]["copy_rate_memorized"]
    assert pair["estimate"] == pytest.approx(d, abs=1e-9)
    from memlib.paths import checkpoints_dir
    for folder in m["folders"].values():
        assert code_changes(checkpoints_dir() / folder) == []           # each run records its training code
