"""Thresholds of PRSS recalibrated to the testbed (Chen et al., CVPR 2025; the released code's defaults are for
Stable Diffusion, whose magnitudes are norms over 16,384 latent values, the testbed's over 768 pixels).

- tau and M (prompt re-anchoring): percentiles of the per-step magnitude a_t = ||eps_s - eps_0|| over plain-CFG
  trajectories of held-out prompts (dev half): below tau nothing changes; at M re-anchoring is at full weight.
  The released code uses one tau and one M for all steps. On the testbed the held-out magnitude itself grows
  about six-fold along sampling (and ends above memorized prompts' mid-trajectory values), so one pooled
  percentile would leave PR idle except at the last steps; tau_t and M_t are therefore taken per step by default
  (``per_step=False``: the code's constants).
- lambda (the search's threshold and the trigger) is the knob; its sweep spans the held-out to the memorized
  first-step magnitudes on the dev half (``memlib.first_step_magnitude.l_target_sweep``, PE's units).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..generation import GenerationConfig, generate


@dataclass(frozen=True)
class PRSSSetup:
    tau: float | tuple         # PR: plain CFG while the magnitude a_t <= tau (a number, or one per step)
    M: float | tuple           # PR: full re-anchoring (s_t = w) once a_t >= M
    source: object = "testbed"   # SS candidates: 'testbed', 'testbed-drop-trigger', a .jsonl path or a callable

    def params(self) -> dict:
        d = asdict(self)
        d.update({k: list(np.round(np.atleast_1d(d[k]), 6)) if np.ndim(d[k]) else d[k] for k in ("tau", "M")})
        d["source"] = self.source if isinstance(self.source, str) else getattr(self.source, "__name__", "callable")
        return d


def pr_thresholds(heldout_norms: np.ndarray, tau_percentile: float = 95.0, m_percentile: float = 99.9,
                  per_step: bool = False):
    """(tau, M) from held-out magnitudes (..., steps): pooled over every step of every trajectory, or per step
    (then two tuples, one value per step)."""
    a = np.asarray(heldout_norms, float)
    a = a.reshape(-1, a.shape[-1]) if per_step else a.reshape(-1, 1)
    if len(a) < 10 or not np.isfinite(a).all():
        raise ValueError("calibrating PR needs at least 10 finite held-out magnitudes (per step)")
    if not 0 < tau_percentile < m_percentile <= 100:
        raise ValueError(f"need 0 < tau_percentile < m_percentile <= 100 (got {tau_percentile}, {m_percentile})")
    tau, M = np.percentile(a, [tau_percentile, m_percentile], axis=0)
    M = np.maximum(M, tau * 1.01 + 1e-6)
    if per_step:
        return tuple(float(x) for x in tau), tuple(float(x) for x in M)
    return float(tau[0]), float(M[0])


def heldout_norms(backend, gen_cfg: GenerationConfig | None = None) -> np.ndarray:
    """Per-step magnitudes (P, G, steps) of plain-CFG generations of the testbed's held-out dev prompts (cached)."""
    from ..cache import cached_arrays, weights_fingerprint
    from ..device import compute_tag
    from ..mitigate.evalset import evaluation_prompts

    tb = getattr(backend, "testbed", None)
    if tb is None:
        raise ValueError("PRSS through the registry calibrates tau and M on the embedded testbed; for another "
                         "model build a PRSSSetup(tau, M, source) and use memlib.prss.methods.prss_method")
    gen_cfg = gen_cfg or GenerationConfig(num_steps=25)
    texts = [p.text for p in evaluation_prompts(tb.data, "dev", groups=("heldout",))]
    key = {"what": "prss-heldout-norms", "weights": weights_fingerprint(backend),
           "compute": compute_tag(backend), "gen": gen_cfg.to_dict(),
           "prompts": texts}
    return cached_arrays("prss", key, lambda: {"norms": generate(backend, texts, gen_cfg, progress=False,
                                                                keep_images=False).text_norm})["norms"]


def testbed_setup(backend, gen_cfg: GenerationConfig | None = None, source="testbed", tau_percentile: float = 95.0,
                  m_percentile: float = 99.9, per_step: bool = True) -> PRSSSetup:
    """A ``PRSSSetup`` for the embedded testbed: tau and M from its held-out dev prompts."""
    tau, M = pr_thresholds(heldout_norms(backend, gen_cfg), tau_percentile, m_percentile, per_step)
    return PRSSSetup(tau, M, source)
