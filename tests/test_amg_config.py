"""Notebook 04's parameters are checked when the config is built, before any model loads: each bad value gets a
one-line error naming the parameter and what to give instead."""
import pytest

from memlib.amg.study import AMGStudyConfig
from memlib.config import ConfigError


@pytest.mark.parametrize("value", [-1, -5])
def test_a_negative_prompt_cap_is_refused(value):
    # a negative cap would slice prompts off the end of each group instead of capping it
    with pytest.raises(ConfigError, match=r"'max_prompts_per_group' = -\d+: give 0 \(every prompt\) or a cap"):
        AMGStudyConfig(max_prompts_per_group=value)


def test_zero_and_positive_prompt_caps_are_accepted():
    assert AMGStudyConfig(max_prompts_per_group=0).max_prompts_per_group == 0
    assert AMGStudyConfig(max_prompts_per_group=1).max_prompts_per_group == 1


@pytest.mark.parametrize("sweep", ["100,10", "10", "10,10", "0,10", "-10,10", "10,2e6", ""])
def test_a_c3_sweep_is_at_least_two_increasing_positive_scales(sweep):
    with pytest.raises(ConfigError, match="'c3_sweep'.*at least two positive scales.*increasing order"):
        AMGStudyConfig(c3_sweep=sweep)


def test_the_digits_sweep_follows_the_same_rule():
    with pytest.raises(ConfigError, match="'digits_c3_sweep'"):
        AMGStudyConfig(digits_c3_sweep="30,3")
    assert AMGStudyConfig(c3_sweep="10,100", digits_c3_sweep="1,10").sweep() == [10.0, 100.0]


@pytest.mark.parametrize("name", ["c1", "c2"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e308, -1.0, -1e-9])
def test_guidance_scales_must_be_finite_and_not_negative(name, value):
    # 1e308 is finite, but c1 * sigma overflows float32 to inf, and inf * 0 is NaN where sigma is 0
    with pytest.raises(ConfigError, match=rf"'{name}' = .*(give a finite scale in \[0, 1000\]|give a finite value)"):
        AMGStudyConfig(**{name: value})


def test_the_released_codes_c1_and_zero_are_accepted():
    cfg = AMGStudyConfig(c1=13.0, c2=0.0)
    assert (cfg.c1, cfg.c2) == (13.0, 0.0)


@pytest.mark.parametrize("name", ["chunk", "digits_steps"])
@pytest.mark.parametrize("value", [0, -3])
def test_chunk_and_digits_steps_must_be_positive(name, value):
    with pytest.raises(ConfigError, match=rf"'{name}' = {value}: give a positive number"):
        AMGStudyConfig(**{name: value})


def test_more_testbed_seeds_are_integers_without_the_main_seed_or_repeats():
    assert AMGStudyConfig(more_testbed_seeds="1,0,1,2").extra_seeds() == [1, 2]
    assert AMGStudyConfig(more_testbed_seeds="").extra_seeds() == []
    with pytest.raises(ConfigError, match="'more_testbed_seeds'"):
        AMGStudyConfig(more_testbed_seeds="one")
