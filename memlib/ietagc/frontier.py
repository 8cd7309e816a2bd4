"""The memorization-fidelity frontier of notebook 06 (IET-AGC+; Liu et al., ECCV 2024; Guan et al., arXiv
2502.09434): the baseline's own trade-off along its training, against which a mitigated run must lie lower, and a
training probe's memorization score read from the counts it recorded."""
from __future__ import annotations

import numpy as np


def probe_mem(entry: dict, tau: float, n: int) -> float:
    """A training probe's memorization score at ``tau``, from its counts at IET-AGC's thresholds."""
    return entry["mq_counts"][f"{tau:.3g}"] / n


def pareto(points: list[dict], key: str = "mem_score") -> list[dict]:
    """The baseline points no other point beats on both ``key`` (memorization score, or copy rate) and Fréchet
    distance, by Fréchet distance."""
    out, best = [], np.inf
    for p in sorted(points, key=lambda p: (p["frechet"], p[key])):
        if p[key] < best:
            out.append(p)
            best = p[key]
    return out


def frontier_mem_at(fd: float, front: list[dict], key: str = "mem_score") -> float:
    """The frontier's ``key`` at Fréchet distance ``fd``: linear between its points, flat past its ends (a run
    with better fidelity than every baseline point is compared with the best-fidelity point)."""
    xs = [p["frechet"] for p in front]
    ys = [p[key] for p in front]
    return float(np.interp(fd, xs, ys))
