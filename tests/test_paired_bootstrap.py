import numpy as np
import pytest

from memlib.metrics import percentile_interval
from memlib.paired_bootstrap import paired_difference


def _by_hand(a, b, units, n_boot, seed):
    """The cluster bootstrap written out loop by loop, with the same random draws."""
    a, b, units = map(np.asarray, (a, b, units))
    labels = np.unique(units)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        drawn = labels[rng.integers(0, len(labels), len(labels))]
        num = den = 0.0
        for u in drawn:
            num += (b[units == u] - a[units == u]).sum()
            den += (units == u).sum()
        reps.append(num / den)
    return percentile_interval(reps)


def test_estimate_and_interval_match_a_hand_computation():
    rng = np.random.default_rng(3)
    a = rng.random(12)
    b = a - 0.3 + 0.1 * rng.standard_normal(12)
    units = [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 7, 7]       # two captions share a planted image
    d = paired_difference(a, b, units, n_boot=300, seed=5)
    assert d.estimate == pytest.approx(np.mean(b - a))
    assert d.ci95 == pytest.approx(_by_hand(a, b, units, 300, 5))
    assert (d.n_prompts, d.n_units) == (12, 8)
    assert d.direction == "lower" and d.verdict("lower") == "holds" and d.verdict("higher") == "does not hold"


def test_units_not_prompts_are_resampled():
    # every planted image has two identical captions: the interval must be the one of the 4 images, not of 8
    # independent prompts (which would be narrower)
    a = np.zeros(8)
    b = np.repeat([0.1, -0.2, 0.4, 0.3], 2)
    by_image = paired_difference(a, b, np.repeat(np.arange(4), 2), n_boot=2000, seed=1)
    by_prompt = paired_difference(a, b, None, n_boot=2000, seed=1)
    assert by_image.n_units == 4 and by_prompt.n_units == 8
    assert by_image.ci95[1] - by_image.ci95[0] > by_prompt.ci95[1] - by_prompt.ci95[0]


def test_an_interval_across_zero_is_not_distinguishable():
    a = np.array([0.0, 1.0, 0.0, 1.0])
    b = np.array([1.0, 0.0, 1.0, 0.0])
    d = paired_difference(a, b, n_boot=500)
    assert d.ci95[0] < 0 < d.ci95[1]
    assert d.verdict("lower") == "not distinguishable" == d.direction


def test_relative_change():
    a = np.array([1.0, 1.0, 1.0, 1.0])
    b = np.array([0.5, 0.5, 0.5, 0.5])
    d = paired_difference(a, b, relative=True, n_boot=100)
    assert d.estimate == pytest.approx(-0.5) and d.ci95 == pytest.approx((-0.5, -0.5))


@pytest.mark.parametrize("a,b,units,match", [
    ([1, 2], [1, 2, 3], None, "same prompts"),
    ([1, np.nan], [1, 2], None, "NaN"),
    ([1, 2], [1, 2], [0], "unit labels"),
])
def test_bad_input_says_what_to_do(a, b, units, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b, units)


def test_a_stored_paired_change_gives_its_direction_only_when_measured():
    from memlib.paired_bootstrap import paired_difference, stored_direction

    d = paired_difference([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.9, 1.0]).to_dict()
    assert stored_direction(d) == "higher"
    assert stored_direction({"ci95": [-0.2, -0.1], "n_units": 3}) == "lower"
    assert stored_direction({"ci95": [-0.2, 0.1], "n_units": 3}) == "not distinguishable"
    for unmeasured in (None, {}, {"ci95": [float("nan"), float("nan")], "n_units": 3},
                       {"ci95": [0.1, 0.2], "n_units": 0}, {"ci95": None}):
        assert stored_direction(unmeasured) is None
