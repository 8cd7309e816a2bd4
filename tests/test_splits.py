"""memlib.splits: a dev/test split fixed by seed, units kept on one side; the testbed's negatives by source."""
import pytest

from memlib.splits import dev_units, select, split


def test_split_is_fixed_by_seed_disjoint_and_halves_each_set():
    units = [f"u{i}" for i in range(41)]
    a, b = split(units, seed=0), split(list(reversed(units)), seed=0)
    assert set(a["dev"]) == set(b["dev"])                          # the order of the items does not matter
    assert set(a["dev"]).isdisjoint(a["test"]) and set(a["dev"]) | set(a["test"]) == set(units)
    assert len(a["dev"]) == 21 and len(a["test"]) == 20
    assert set(split(units, seed=1)["dev"]) != set(a["dev"])       # another seed, another split
    assert split(units, seed=0) == a                               # the same seed, the same split
    assert select(units, "all") == units
    with pytest.raises(ValueError, match="choose 'dev', 'test' or 'all'"):
        select(units, "train")


def test_items_sharing_a_unit_fall_on_one_side():
    items = [(u, k) for u in "abcdefgh" for k in range(4)]          # four phrasings of each combination
    halves = split(items, unit=lambda it: it[0], seed=3)
    for half in halves.values():
        for u, _ in half:
            assert sum(it[0] == u for it in half) == 4
    assert dev_units("abcdefgh", 3) == {u for u, _ in halves["dev"]}


def test_testbed_sources_and_their_units(tiny_data):
    from memlib.testbed.data import TEMPLATES
    from memlib.testbed.sources import negative_sources, split_unit

    data = tiny_data
    src = negative_sources(data, n_random=10, n_generic=30)
    assert len(src["heldout"]) == len(data.combos_heldout) * len(TEMPLATES)
    assert len(src["random"]) == 10 and len({p.text for p in src["random"]}) == 10
    assert [p.text for p in src["random"][:len(data.prompts_in("random"))]] == \
        [p.text for p in data.prompts_in("random")]                  # the data's own come first
    generic = {p.text for p in src["generic"]}
    assert len(generic) == 30 and generic <= {c for c, g in zip(data.captions, data.group) if g == "generic"}
    assert not {p.text for p in src["heldout"]} & set(data.captions)  # held-out prompts were never trained on
    # the phrasings of one held-out combination share a unit, so they fall on one side of the split
    assert len({split_unit(p) for p in src["heldout"]}) == len(data.combos_heldout)
    planted = data.prompts_in("image_dup")
    assert split_unit(planted[0]) == split_unit(planted[1])          # two captions of one planted image
    again = negative_sources(data, n_random=10, n_generic=30)
    assert [p.text for p in again["generic"]] == [p.text for p in src["generic"]]
