"""Seed-level intervals for notebook 06 (IET-AGC+; Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434).

The training seed, not the sample, is the independent unit of a training method: two baseline seeds' sample
intervals need not overlap. So a comparison of two kinds of run (say IET alone against the baseline) pairs the runs
that share a training seed (and the same sample seeds), and its interval is a two-level bootstrap: draw training
seeds with replacement, then samples with replacement within each drawn seed (Davison & Hinkley 1997, Sec. 3.8);
each replicate is the mean over drawn seeds of the mean paired difference over drawn samples. With three seeds
the interval is wide; a claim holds only when it excludes zero.
"""
from __future__ import annotations

import numpy as np

from ..metrics import percentile_interval

COLUMNS = ("copy_rate", "mem_score", "gu_replication", "nn_is_planted")
STEPS = (("baseline", "iet"), ("iet", "agc"), ("agc", "msr"), ("msr", "full"), ("baseline", "full"))


def _replicates(per_seed: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, k, k)
        reps[b] = np.mean([per_seed[i][rng.integers(0, len(per_seed[i]), len(per_seed[i]))].mean() for i in drawn])
    return reps


def two_level(per_seed: list, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean over seeds of each seed's mean, with its two-level percentile interval (``per_seed``: one array of
    per-sample values, or of paired differences, per training seed)."""
    per_seed = [np.asarray(v, float) for v in per_seed if len(v)]
    if not per_seed:
        return {"estimate": float("nan"), "ci95": [float("nan")] * 2, "n_units": 0, "per_seed": []}
    means = [float(v.mean()) for v in per_seed]
    lo, hi = percentile_interval(_replicates(per_seed, n_boot, seed))
    return {"estimate": float(np.mean(means)), "ci95": [float(lo), float(hi)], "n_units": len(per_seed),
            "per_seed": means}


def seed_level(columns: dict, kinds: dict, seed: int = 0) -> dict | None:
    """Each kind's mean over its training seeds and each component step (``STEPS``: b − a, paired by training
    seed) in every privacy column, with two-level intervals; None when no kind besides the full method and the
    baseline has two seeds (the components then have one seed, and only sample-level intervals exist)."""
    if max((len(kinds.get(k, [])) for k in ("iet", "agc", "msr")), default=0) < 2:
        return None

    def by_seed(kind):
        return {n.rsplit("-s", 1)[1]: n for n in kinds.get(kind, [])}

    means = {kind: {col: two_level([columns[n][col] for n in kinds[kind]], seed=seed) for col in COLUMNS}
             for kind in ("baseline", "iet", "agc", "msr", "full") if kinds.get(kind)}
    steps = []
    for a, b in STEPS:
        ra, rb = by_seed(a), by_seed(b)
        shared = sorted(set(ra) & set(rb), key=int)
        if not shared:
            continue
        steps.append({"from": a, "to": b, "seeds": [int(s) for s in shared],
                      **{col: two_level([np.asarray(columns[rb[s]][col], float) - np.asarray(columns[ra[s]][col], float)
                                         for s in shared], seed=seed) for col in COLUMNS}})
    return {"means": means, "steps": steps}
