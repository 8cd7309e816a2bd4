"""Prompt re-anchoring (PR; Chen et al., CVPR 2025, Sec. 4.1), as implemented in the released code.

With eps_s the prediction for the prompt in use (an SS rewrite, Wen's optimized embedding, or the prompt itself),
eps_p for the original prompt and eps_0 for the empty one, at every step

    a_t = ||eps_s - eps_0||_2
    a_t <= tau:  plain CFG, eps_0 + w (eps_s - eps_0)
    a_t >  tau:  eps_0 + w (eps_s - eps_0) - (s_t - 1)(eps_p - eps_0),
                 s_t = min(w (a_t - c) / (M - c), w),  c = (w tau - M) / (w - 1),

so s_t rises linearly from 1 at a_t = tau (continuous with CFG) to w at a_t >= M, where the estimate becomes the
paper's eps_p + w (eps_s - eps_p): CFG anchored at the memorized prompt instead of the empty one. PR acts only on
prompts flagged at the first step (magnitude above lambda). eps_p comes from an extra branch in the same batched
model call (``BRANCH``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..sampling import StepState, magnitude

BRANCH = "prss_original"


def reanchor_weight(a: torch.Tensor, w: float, tau: float, M: float) -> torch.Tensor:
    """s_t for magnitudes ``a`` (1 at a = tau, w at a >= M; 0 where a <= tau: no re-anchoring)."""
    if not (w > 1 and M > tau >= 0):
        raise ValueError(f"PR needs a guidance scale w > 1 and thresholds M > tau >= 0 (got w={w}, tau={tau}, M={M})")
    c = (w * tau - M) / (w - 1)
    s = (w * (a - c) / (M - c)).clamp(max=w)
    return torch.where(a > tau, s, torch.zeros_like(s))


def _at(v, s: StepState) -> float:
    if np.ndim(v) == 0:
        return float(v)
    if len(v) != s.num_steps:
        raise ValueError(f"PR thresholds were calibrated for {len(v)} sampling steps, this run has {s.num_steps}; "
                         "recalibrate them for this number of steps")
    return float(v[s.i])


class ReanchorHook:
    """PR for one batch; ``flagged[b]``: row b's prompt was flagged at the first step. ``record`` (optional,
    {'a', 's', 'p', 'd'}: arrays (rows, steps)) and ``rows`` collect a_t, s_t and, where the original prompt's
    branch ran, its magnitude ||eps_p - eps_0|| and its distance to the prompt in use ||eps_s - eps_p||."""

    def __init__(self, tau, M, flagged, record: dict | None = None, rows=None):
        self.tau, self.M = tau, M          # numbers, or one per sampling step (thresholds calibrated per step)
        self.flagged = torch.as_tensor(np.asarray(flagged, bool))
        self.record, self.rows = record, rows

    def __call__(self, s: StepState):
        a = magnitude(s.eps_cond, s.eps_uncond)
        w = s.guidance_scale
        weight = reanchor_weight(a, w, _at(self.tau, s), _at(self.M, s)) * self.flagged.to(a.device)
        if self.record is not None:
            got = [("a", a), ("s", weight)]
            if BRANCH in s.eps_branches:
                got.append(("p", magnitude(s.eps_branches[BRANCH], s.eps_uncond)))
                got.append(("d", magnitude(s.eps_cond, s.eps_branches[BRANCH])))
            for name, v in got:
                if name in self.record:
                    self.record[name][np.asarray(self.rows), s.i] = v.detach().cpu().numpy()
        if not bool((weight > 0).any()):
            return None
        eps_p = s.eps_branches[BRANCH]
        k = (weight - 1).clamp_min(0).view(-1, *[1] * (s.eps.dim() - 1))
        return s.eps - k * (eps_p - s.eps_uncond)
