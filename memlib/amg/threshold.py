"""AMG's per-step switch threshold lambda_t (Chen, Liu, Xu, CVPR 2024, Eq. 10; Supp. Eq. 19).

Both released codes use a saturating exponential in the DDPM timestep t,
    lambda_t = a + (b - a) * exp(-c * t),
so lambda_t is a at the start of sampling (t ~ 1000) and b at its end (t = 0); the SD code has a = 0.3, b = 0.4,
c = 0.005 on SSCD similarity. On the testbed the scale differs (pixel NCC, nL2), so ``fit_exponential`` fits the
same form to a high percentile of sigma_t over held-out trajectories (dev half) and ``Threshold`` records the fit.

Table 5's two ablations:
- a ``constant`` threshold, at the level that fires on the same share of held-out dev trajectories as the
  time-varying one (``constant_at_fire_share``): the comparison holds the false alarms fixed and asks what the
  time-varying shape adds in memorization caught;
- the switch ``always`` on (the paper's "w/o conditional guidance"): see ``Threshold.always_on``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("time", "constant", "always")


@dataclass(frozen=True)
class Threshold:
    kind: str = "time"     # 'time' (the exponential), 'constant' (lambda_t = a) or 'always' (every step fires;
                           # a is then the level the code schedule measures sigma from, see ``always_on``)
    a: float = 0.3         # value at t -> infinity (start of sampling)
    b: float = 0.4         # value at t = 0 (end of sampling)
    c: float = 0.005       # rate per DDPM timestep

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"threshold kind {self.kind!r}: choose one of {KINDS}")
        if not all(np.isfinite([self.a, self.b, self.c])) or self.c < 0:
            raise ValueError(f"threshold needs finite a, b and c >= 0 (got a={self.a}, b={self.b}, c={self.c})")

    def __call__(self, t) -> np.ndarray | float:
        """The gate: sigma_t above this fires the switch (-inf: always)."""
        if self.kind == "always":
            return -np.inf * np.ones_like(np.asarray(t, float))
        return self.curve(t)

    def curve(self, t) -> np.ndarray | float:
        """The level the code schedule's G_sim weight c3 (sigma_t - level) e^((1000 - t) / 170) measures sigma
        from: lambda_t itself, or with the switch always on the constant ``a`` (see ``always_on``)."""
        if self.kind in ("constant", "always"):
            return self.a + 0 * np.asarray(t, float)
        return self.a + (self.b - self.a) * np.exp(-self.c * np.asarray(t, float))

    @staticmethod
    def always_on(level: float) -> "Threshold":
        """The switch disabled (Table 5's "w/o conditional guidance").

        Our reading of the paper's ablation: Eq. 10 with its indicator fixed at 1, so every term acts at every step
        of every generation and lambda_t is consulted nowhere. The code schedule's factor (sigma_t - lambda_t),
        clipped at 0, is itself a switch (zero wherever sigma_t <= lambda_t), so with the switch off it is measured
        from ``level`` instead: the lowest sigma_t of any held-out dev trajectory (``Calibration.floor``), a
        constant as the released SD code's 0.3 in its 100 (sigma - 0.3) e^((1000 - t) / 170) is. G_sim then acts
        wherever the other terms do, still growing with sigma_t."""
        return Threshold("always", float(level), float(level), 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_exponential(t, values, rates=None) -> tuple[Threshold, float]:
    """Least-squares fit of a + (b - a) exp(-c t) to ``values`` at timesteps ``t``; (threshold, RMS residual).

    For each rate c on a log grid the model is linear in (a, b - a), solved exactly; the best c wins. A flat
    curve (no time trend) comes out as c = 0 with a = b."""
    t, v = np.asarray(t, float), np.asarray(values, float)
    if t.shape != v.shape or t.size < 3 or not np.isfinite(v).all():
        raise ValueError("fit_exponential needs >= 3 finite values, one per timestep")
    def fit(c: float) -> tuple[float, float, float, float]:
        basis = np.stack([np.ones_like(t), np.exp(-c * t)], 1)
        coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
        return float(np.sqrt(np.mean((basis @ coef - v) ** 2))), float(coef[0]), float(coef[0] + coef[1]), float(c)

    grid = np.concatenate([[0.0], np.geomspace(1e-4, 0.1, 200)]) if rates is None else np.asarray(rates, float)
    best = min((fit(c) for c in grid), key=lambda r: r[0])
    if rates is None and best[3] > 0:   # refine the rate between the grid's neighbours
        from scipy.optimize import minimize_scalar
        lo, hi = np.log(best[3] / 1.04), np.log(best[3] * 1.04)
        ref = minimize_scalar(lambda lc: fit(np.exp(lc))[0], bounds=(lo, hi), method="bounded")
        best = min(best, fit(float(np.exp(ref.x))), key=lambda r: r[0])
    rms, a, b, c = best
    if c == 0.0:
        a = b = float(v.mean())
    return Threshold("time", a, b, c), rms


def constant_at_fire_share(sigma, share: float) -> Threshold:
    """The constant threshold that fires on ``share`` of the trajectories ``sigma`` (N, S) at least once (a false
    alarm is a trajectory the switch changes, as in the 'switch fired' columns): halfway between the k-th and
    (k+1)-th highest trajectory peak, k = round(share N); above every peak when k = 0, below every one when k = N.
    Table 5's constant threshold, at the time-varying one's held-out firing share."""
    peaks = np.sort(np.asarray(sigma, float).reshape(-1, np.shape(sigma)[-1]).max(1))[::-1]
    if not 0 <= share <= 1 or not len(peaks) or not np.isfinite(peaks).all():
        raise ValueError(f"constant_at_fire_share needs finite trajectories and a share in [0, 1] (got {share})")
    k = int(round(share * len(peaks)))
    if k == 0:
        level = peaks[0]                                   # sigma > level never holds
    elif k == len(peaks):
        level = np.nextafter(peaks[-1], -np.inf)
    else:
        level = (peaks[k - 1] + peaks[k]) / 2
    return Threshold("constant", float(level), 0.0, 0.0)
