"""Paired bootstrap intervals for "A beats B", "changes by x" and "within x %" statements.

Two methods compared on the same prompts and the same initial noises give paired per-prompt values ``a`` and
``b``. The independent unit is not the prompt but what the prompts share: on the testbed, the planted image (the
image-duplication group has two captions per image, so its prompts are not independent draws). The bootstrap
therefore resamples *units* with replacement, and each replicate is the prompt-weighted mean over the prompts of
the drawn units (Davison & Hinkley 1997, Sec. 3.8, the cluster bootstrap):

    d* = sum_{u in draw} sum_{p in u} (b_p - a_p) / sum_{u in draw} n_u

The estimate is the plain mean over prompts of b - a; the interval is the percentile interval of d*. A claim
holds only when that interval excludes zero on the claimed side (``direction``); otherwise it is "not
distinguishable".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .claims import verdict
from .metrics import percentile_interval


@dataclass(frozen=True)
class PairedDifference:
    """b - a over the same prompts: the estimate, its percentile interval over units, and the counts."""
    estimate: float
    ci95: tuple[float, float]
    n_prompts: int
    n_units: int
    relative: bool = False        # True: (mean b / mean a) - 1 instead of mean(b - a)

    @property
    def direction(self) -> str:
        """'higher' or 'lower' when the interval excludes zero, else 'not distinguishable'."""
        lo, hi = self.ci95
        if lo > 0:
            return "higher"
        if hi < 0:
            return "lower"
        return "not distinguishable"

    def verdict(self, claimed: str) -> str:
        """The verdict on the claim that b is ``claimed`` ('higher' or 'lower') than a."""
        if claimed not in ("higher", "lower"):
            raise ValueError(f"claimed = {claimed!r}: say 'higher' or 'lower'")
        d = self.direction
        return verdict(None if d == "not distinguishable" else d == claimed, measured=self.n_units > 0)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "ci95": list(self.ci95), "n_prompts": self.n_prompts,
                "n_units": self.n_units, "relative": self.relative}


def _unit_sums(a: np.ndarray, b: np.ndarray, units) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same prompts: got shapes {a.shape} and {b.shape}; give one value "
                         f"per prompt for each method")
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        raise ValueError("paired values contain NaN or infinity; score every prompt before comparing")
    units = np.arange(len(a)) if units is None else np.asarray(units)
    if units.shape != a.shape:
        raise ValueError(f"{len(units)} unit labels for {len(a)} prompts; give one unit (e.g. planted image) per prompt")
    labels, idx = np.unique(units, return_inverse=True)
    n = np.bincount(idx, minlength=len(labels)).astype(float)
    return (np.bincount(idx, a, len(labels)), np.bincount(idx, b, len(labels)), n, len(labels))


def _draws(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_units) counts: how often each unit is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_units, (n_boot, n_units))
    return np.stack([np.bincount(p, minlength=n_units) for p in picks]).astype(float)


def stored_direction(stored: dict | None) -> str | None:
    """``PairedDifference.direction`` of one stored as ``to_dict()`` in a metrics file: 'higher', 'lower' or
    'not distinguishable'; None when it was not measured (absent, no units, or no finite interval)."""
    if not stored or not stored.get("ci95") or stored.get("n_units", 1) == 0:
        return None
    lo, hi = stored["ci95"]
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (lo, hi)):
        return None
    return "higher" if lo > 0 else "lower" if hi < 0 else "not distinguishable"


def paired_difference(a, b, units=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                      relative: bool = False) -> PairedDifference:
    """mean(b) - mean(a) (or mean(b) / mean(a) - 1 with ``relative``) over the same prompts, with a percentile
    interval from resampling ``units`` (one label per prompt; None: every prompt is its own unit)."""
    if n_boot < 1:
        raise ValueError(f"n_boot = {n_boot}: give a positive number of bootstrap replicates")
    sa, sb, n, n_units = _unit_sums(a, b, units)
    if n_units == 0:
        return PairedDifference(float("nan"), (float("nan"), float("nan")), 0, 0, relative)
    w = _draws(n_units, n_boot, seed)
    ma, mb = (w @ sa) / (w @ n), (w @ sb) / (w @ n)
    if relative:
        total_a = sa.sum()
        if total_a == 0:
            raise ValueError("a relative change needs a non-zero mean of a; compare differences instead")
        est = sb.sum() / total_a - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = mb / ma - 1
        reps = reps[np.isfinite(reps)]
    else:
        est, reps = (sb.sum() - sa.sum()) / n.sum(), mb - ma
    return PairedDifference(float(est), percentile_interval(reps, level), int(n.sum()), n_units, relative)


def unit_mean(values, units=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, tuple]:
    """(mean over prompts, percentile interval from resampling ``units``) of one method's per-prompt values."""
    values = np.asarray(values, float)
    d = paired_difference(np.zeros_like(values), values, units, n_boot, seed, level)
    return d.estimate, d.ci95
