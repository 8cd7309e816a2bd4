"""How notebook 05 judges a stored comparison (a ``PairedDifference.to_dict()`` or an interval): a claim holds
only when its interval excludes zero (or the bar) on the claimed side; "does not hold" only when it is
excluded the other way (or, for a count over levels, when too many levels went the other way for the count to
be reached); otherwise it is not distinguishable (None)."""
from __future__ import annotations

import math

from ..paired_bootstrap import stored_direction


def direction(pd: dict | None) -> str | None:
    """'higher' or 'lower' when the paired interval excludes zero, 'not distinguishable' when it does not,
    None without a finite interval."""
    return stored_direction(pd)


def holds(pd: dict | None, claimed: str) -> bool | None:
    """The claim that b is ``claimed`` ('higher' / 'lower') than a: True, False (excluded the other way) or
    None (not distinguishable, or not measured)."""
    d = direction(pd)
    if d in (None, "not distinguishable"):
        return None
    return d == claimed


def within(ci, bar: float, side: str) -> bool | None:
    """Whether a quantity is at most (``side`` 'at most') or at least ('at least') ``bar``, from its interval."""
    if not ci or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return None
    lo, hi = ci
    if side == "at most":
        return True if hi <= bar else False if lo > bar else None
    if side == "at least":
        return True if lo >= bar else False if hi < bar else None
    raise ValueError(f"side = {side!r}: say 'at most' or 'at least'")


def both(*parts: bool | None) -> bool | None:
    """A conjunction: False if any part fails, True if all hold, else None."""
    if any(p is False for p in parts):
        return False
    return True if all(p is True for p in parts) else None


def count(outcomes: list[bool | None], need: int) -> tuple[bool | None, int, int]:
    """(verdict, wins, losses) of a claim that holds at ``need`` of the outcomes: holds when ``need`` are
    wins, does not hold when the wins and the undecided together fall short of ``need``."""
    wins = sum(o is True for o in outcomes)
    losses = sum(o is False for o in outcomes)
    if not outcomes:
        return None, 0, 0
    return (True if wins >= need else False if len(outcomes) - losses < need else None), wins, losses


def majority(n: int) -> int:
    return n // 2 + 1
