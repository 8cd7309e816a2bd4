"""What every paper package's study returns beside its metrics: typed claims, and the page templates that turn
metrics and claims into sentences.

A study's Result has ``to_metrics() -> dict`` (what ``write_metrics`` stores) and ``claims() -> list[Claim]``
(each of the paper's claims as this run measured it). A paper's ``report.py`` computes the claims from the
metrics alone (so ``memlib results`` can rebuild them from a committed ``metrics.json``), and the sentences live
in a Markdown template under ``docs/templates/``, filled by :func:`render`. No sentence is built in code.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Any, Protocol

VERDICTS = ("holds", "does not hold", "not distinguishable", "not measured")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a run measured it.

    ``name`` is a stable identifier templates refer to; ``claim`` the paper's statement in a few words;
    ``verdict`` one of :data:`VERDICTS`; ``evidence`` the numbers behind the verdict (metric name -> value).
    """
    name: str
    claim: str
    verdict: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.name!r}: verdict {self.verdict!r} is not one of {VERDICTS}")

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"


def verdict(holds: bool | None, measured: bool = True) -> str:
    """The verdict word for a test: True -> holds, False -> does not hold, None -> not distinguishable."""
    if not measured:
        return "not measured"
    return "not distinguishable" if holds is None else ("holds" if holds else "does not hold")


class StudyResult(Protocol):
    """What ``run_study`` returns in every paper package."""

    def to_metrics(self) -> dict: ...

    def claims(self) -> list[Claim]: ...


class _Formatter(string.Formatter):
    """``str.format`` that names the template and the missing key, and shows non-finite numbers as 'n/a'."""

    def __init__(self, where: str):
        self.where = where

    def get_value(self, key, args, kwargs):
        try:
            return super().get_value(key, args, kwargs)
        except KeyError:
            raise KeyError(f"{self.where}: no value named {key!r}; the template may only use "
                           f"{sorted(kwargs)[:20]}{' ...' if len(kwargs) > 20 else ''}") from None

    def format_field(self, value, format_spec):
        if isinstance(value, float) and not math.isfinite(value):
            return "n/a"
        return super().format_field(value, format_spec)


def render(template: str, values: dict[str, Any], where: str = "template") -> str:
    """Fill ``template`` (``str.format`` syntax: ``{mem_reduction:.0%}``, ``{claims[frontier].verdict}``) from
    ``values``; a missing name raises a ``KeyError`` naming ``where`` and the name."""
    return _Formatter(where).vformat(template, (), values)
