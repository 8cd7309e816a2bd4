"""AMG's per-step switch threshold lambda_t (Chen, Liu, Xu, CVPR 2024, Eq. 10; Supp. Eq. 19).

Both released codes use a saturating exponential in the DDPM timestep t,
    lambda_t = a + (b - a) * exp(-c * t),
so lambda_t is a at the start of sampling (t ~ 1000) and b at its end (t = 0); the SD code has a = 0.3, b = 0.4,
c = 0.005 on SSCD similarity. On the testbed the scale differs (pixel NCC, nL2), so ``fit_exponential`` fits the
same form to a high percentile of sigma_t over held-out trajectories (dev half) and ``Threshold`` records the fit.
Table 5's ablations are the ``constant`` threshold and ``always`` (the switch disabled).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("time", "constant", "always")


@dataclass(frozen=True)
class Threshold:
    kind: str = "time"     # 'time' (the exponential), 'constant' (lambda_t = a) or 'always' (every step fires;
                           # a, b, c still give the level the code schedule measures sigma from)
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
        """lambda_t as a level (the code schedule's sigma - lambda_t uses it, also when the gate is 'always')."""
        if self.kind == "constant":
            return self.a + 0 * np.asarray(t, float)
        return self.a + (self.b - self.a) * np.exp(-self.c * np.asarray(t, float))

    def always_on(self) -> "Threshold":
        """The same curve with the switch disabled (Table 5's 'w/o conditional guidance')."""
        return Threshold("always", self.a, self.b, self.c)

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


def constant_like(th: Threshold, t) -> Threshold:
    """The constant threshold at the time-varying one's highest value over ``t`` (Table 5's ablation). It is never
    below the time-varying one, so it fires only where that one fires too: no more false fires on held-out
    prompts, and the comparison asks what the time-varying shape adds in memorization caught."""
    return Threshold("constant", float(np.max(th(np.asarray(t, float)))), 0.0, 0.0)
