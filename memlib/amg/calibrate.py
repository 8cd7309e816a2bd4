"""Calibrating AMG's switch threshold lambda_t on held-out generations (Chen, Liu, Xu, CVPR 2024, Eq. 10).

The paper's lambda_t (SSCD scale, LAION neighbours) does not transfer to another similarity or training set, so
we record sigma_t (similarity of x0_hat to its nearest training sample) along plain-CFG trajectories of prompts
that are *not* memorized (the testbed's held-out combinations, dev half), take a high percentile per step and fit
the released code's form a + (b - a) exp(-c t) to it (``threshold.fit_exponential``). The fit, its residual and
the share of the calibration trajectories that would trip it are recorded, with Table 5's two ablation thresholds
taken from the same trajectories: the constant one at the fitted threshold's firing share, and the switch always
on with its level at the trajectories' lowest sigma_t (``Threshold.always_on``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..generation import GenerationConfig, generate
from ..mitigate.similarity import SimilarityIndex
from .guidance import AMGGuidance, AMGSettings
from .threshold import Threshold, constant_at_fire_share, fit_exponential

NEVER = Threshold("constant", 1e9, 0.0, 0.0)   # records sigma_t, never fires


@dataclass
class Calibration:
    threshold: Threshold          # the fitted time-varying lambda_t
    constant: Threshold           # Table 5's constant threshold (``threshold.constant_at_fire_share``)
    always: Threshold             # Table 5's switch always on (``Threshold.always_on`` at ``floor``)
    percentile: float             # of sigma_t per step over the calibration trajectories
    timesteps: np.ndarray         # (S,)
    curve: np.ndarray             # (S,) that percentile per step
    rms: float                    # fit residual
    fire_share: float             # calibration trajectories the fitted threshold trips at some step
    constant_fire_share: float    # ... and the constant one
    floor: float                  # the lowest sigma_t of any calibration trajectory at any step
    n_trajectories: int

    def to_dict(self) -> dict:
        return {"threshold": self.threshold.to_dict(), "constant": self.constant.to_dict(),
                "always": self.always.to_dict(), "percentile": self.percentile,
                "timesteps": self.timesteps.tolist(), "curve": self.curve.tolist(), "rms": self.rms,
                "fire_share": self.fire_share, "constant_fire_share": self.constant_fire_share, "floor": self.floor,
                "n_trajectories": self.n_trajectories}


def sigma_traces(backend, prompts: list[str], gen_cfg: GenerationConfig, index: SimilarityIndex,
                 similarity: str = "ncc", to_pixels=None, progress: bool = False):
    """(sigma_t (P, G, S), timesteps (S,), the generation) along plain-CFG trajectories of ``prompts``."""
    P, G, S = len(prompts), gen_cfg.n_gens, gen_cfg.num_steps
    record = {"_rows": P * G}
    settings = AMGSettings(terms=("spe",), similarity=similarity)   # a term that never fires: sigma only
    gen = generate(backend, prompts, gen_cfg, progress=progress, extra_hooks=lambda rows: [
        AMGGuidance(settings, index, NEVER, to_pixels=to_pixels, record=record, rows=rows)])
    return record["sigma"].reshape(P, G, S), np.asarray(gen.timesteps), gen


def fire_share(sigma: np.ndarray, threshold: Threshold, timesteps) -> float:
    """Share of the trajectories ``sigma`` (N, S) on which ``threshold`` fires at least once."""
    s = np.asarray(sigma, float).reshape(-1, np.shape(sigma)[-1])
    return float((s > threshold(np.asarray(timesteps, float))[None]).any(1).mean())


def calibrate(sigma: np.ndarray, timesteps, percentile: float = 99.0) -> Calibration:
    """Fit lambda_t to the ``percentile`` of held-out ``sigma`` (N, S) or (P, G, S) per step."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile = {percentile}: give a value in (0, 100]")
    s = np.asarray(sigma, float).reshape(-1, np.shape(sigma)[-1])
    if len(s) < 10:
        raise ValueError(f"calibrating lambda_t on {len(s)} trajectories; give at least 10 held-out ones")
    t = np.asarray(timesteps, float)
    curve = np.percentile(s, percentile, axis=0)
    th, rms = fit_exponential(t, curve)
    share = fire_share(s, th, t)
    const = constant_at_fire_share(s, share)
    floor = float(s.min())
    return Calibration(th, const, Threshold.always_on(floor), float(percentile), t, curve, rms, share,
                       fire_share(s, const, t), floor, len(s))


def heldout_sigma_traces(backend, gen_cfg: GenerationConfig, max_per_group: int = 0,
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_t (P, G, S), timesteps) of the embedded testbed's held-out dev prompts under plain CFG, cached on the
    weights, the generation settings and the prompts (``max_per_group``: the first N of them; 0: all)."""
    from ..cache import cached_arrays, weights_fingerprint
    from ..device import compute_tag
    from ..mitigate.evalset import evaluation_prompts

    data = backend.testbed.data
    texts = [p.text for p in evaluation_prompts(data, "dev", groups=("heldout",), max_per_group=max_per_group)]
    key = {"what": "amg-sigma-heldout-dev", "weights": weights_fingerprint(backend),
           "compute": compute_tag(backend), "gen": gen_cfg.to_dict(),
           "prompts": texts}

    def compute():
        sig, t, _ = sigma_traces(backend, texts, gen_cfg, SimilarityIndex(data.images), progress=progress)
        return {"sigma": sig, "timesteps": t}

    arr = cached_arrays("amg", key, compute)
    return arr["sigma"], arr["timesteps"]


def calibrate_testbed(backend, gen_cfg: GenerationConfig, percentile: float, max_per_group: int = 0,
                      progress: bool = False) -> Calibration:
    """lambda_t for the embedded testbed from its held-out dev prompts (``heldout_sigma_traces``) at the
    ``percentile`` of sigma_t per step."""
    return calibrate(*heldout_sigma_traces(backend, gen_cfg, max_per_group, progress), percentile)
