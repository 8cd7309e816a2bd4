"""95 % intervals for the rates notebook 02 reports (a share of prompts whose trigger is ranked in the top 2).

Wilson's score interval (Wilson, JASA 1927; Brown, Cai, DasGupta, Statistical Science 2001, Eq. 4) for k hits
out of n independent prompts:

    centre = (k + z^2/2) / (n + z^2),   half-width = z sqrt(n) / (n + z^2) * sqrt(p (1 - p) + z^2 / (4 n)),

with p = k / n. Unlike the normal approximation it stays inside [0, 1] and does not collapse to a point at
0/n or n/n, which matters here: a testbed half holds about 16 prompts.
"""
from __future__ import annotations

from math import isfinite, nan, sqrt
from typing import Sequence

Z95 = 1.959963984540054   # the standard normal's 97.5 % quantile


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(lo, hi) for ``hits`` successes out of ``n``; (nan, nan) when there is nothing to measure (n = 0)."""
    if int(hits) != hits or int(n) != n or not 0 <= hits <= n:
        raise ValueError(f"need whole numbers 0 <= hits <= n, got hits={hits}, n={n}")
    if not (isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive number, got {z}")
    if n == 0:
        return nan, nan
    p, z2 = hits / n, z * z
    centre = (hits + z2 / 2) / (n + z2)
    half = z * sqrt(n) / (n + z2) * sqrt(p * (1 - p) + z2 / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_interval(hits: Sequence[bool]) -> tuple[float, tuple[float, float]]:
    """The share of true values in ``hits`` and its Wilson 95 % interval; (nan, (nan, nan)) for no values."""
    k, n = int(sum(bool(h) for h in hits)), len(hits)
    return (k / n if n else nan), wilson_interval(k, n)
