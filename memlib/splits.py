"""Development / test halves of a prompt set, fixed by a seed.

Every window, threshold and knob is chosen on the development half; headlines are reported on the test half.
Split one group at a time (verbatim, held-out, ...), so each group is halved. The unit groups items that must
fall on the same side (the captions of one planted image, the phrasings of one held-out combination): the
distinct units are sorted, shuffled by ``seed`` and the first half (rounded up) is the development half. The
split depends only on the seed and the set of units, never on the items' order.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
SPLIT_SEED = 0          # the project's split; change it only to confirm a finding on another split
HALVES = ("dev", "test")


def dev_units(units: Sequence[str], seed: int = SPLIT_SEED) -> set[str]:
    """The units of the development half: half (rounded up) of the distinct ``units``, chosen by ``seed``."""
    distinct = sorted(set(units))
    if any(not isinstance(u, str) or not u for u in distinct):
        raise ValueError("split units must be non-empty strings")
    order = np.random.default_rng(int(seed)).permutation(len(distinct))
    return {distinct[i] for i in order[:math.ceil(len(distinct) / 2)]}


def split(items: Sequence[T], unit: Callable[[T], str] = str, seed: int = SPLIT_SEED) -> dict[str, list[T]]:
    """{'dev': [...], 'test': [...]}, each in the items' order; items sharing a unit stay together."""
    units = [unit(it) for it in items]
    dev = dev_units(units, seed)
    return {"dev": [it for it, u in zip(items, units) if u in dev],
            "test": [it for it, u in zip(items, units) if u not in dev]}


def select(items: Sequence[T], half: str, unit: Callable[[T], str] = str, seed: int = SPLIT_SEED) -> list[T]:
    """The items in ``half`` ('dev', 'test' or 'all')."""
    if half == "all":
        return list(items)
    if half not in HALVES:
        raise ValueError(f"half {half!r}: choose 'dev', 'test' or 'all'")
    return split(items, unit, seed)[half]
