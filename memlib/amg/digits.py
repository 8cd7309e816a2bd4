"""AMG on the digits DDPMs: the analogue of Tables 2-3 (Chen, Liu, Xu, CVPR 2024, Sec. 6.2; CIFAR-10 there).

Unconditional and class-conditional models (``memlib.testbed.digits``) are guided by dissimilarity alone, as the
paper does for them, with sigma = -nL2 (Eq. 8; k = 50, alpha = 0.5) of x0_hat against the deduplicated training
set (the released code also indexes a deduplicated copy). Samples are scored by
``memlib.mitigate.digits.DigitsScorer`` (nL2 and its shares below 1.4 and 1.6, Gu and planted replication, Fréchet
distance of classifier features against held-out real digits, beside its floor).
lambda_t is fitted on dev-seed trajectories that did not end as Gu replicas (``calibrate``), c3 on dev seeds;
everything is reported on the test seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..mitigate.similarity import SimilarityIndex
from ..sampling import sample, seeded_rows
from ..schedule import sd_scheduler
from .guidance import AMGGuidance, AMGSettings
from .threshold import Threshold


@dataclass
class DigitsRun:
    samples: torch.Tensor      # (N, 1, 8, 8) in [-1, 1]
    sigma: np.ndarray          # (N, S) sigma_t = -nL2 of x0_hat
    fired: np.ndarray          # (N, S) the switch fired
    seconds_per_image: float
    evals_per_image: float


def sample_digits(backend, seeds, steps: int = 50, threshold: Threshold | None = None, c3: float = 0.0,
                  index: SimilarityIndex | None = None, schedule: str = "code", batch: int = 500) -> DigitsRun:
    """DDIM samples of a digits model from per-seed noises; class-conditional models get class seed % 10 (the
    paper cycles classes the same way) without classifier-free guidance. With ``threshold`` and ``index``,
    AMG's dissimilarity guidance (c3) acts where sigma_t > lambda_t; with c3 = 0 sigma_t is only recorded."""
    seeds = list(seeds)
    n, S = len(seeds), steps
    record = {"_rows": n}
    out, evals, t0 = [], 0.0, time.time()
    never = Threshold("constant", 1e9, 0.0, 0.0)
    settings = AMGSettings(terms=("sim",), similarity="nl2", c3=c3, schedule=schedule)
    for s in range(0, n, batch):
        part = seeds[s:s + batch]
        rows = list(range(s, s + len(part)))
        x_T, gens = seeded_rows(backend.sample_shape, part, backend.device)
        labels = backend.labels([sd % 10 for sd in part]) if backend.n_classes else None
        hooks = []
        if index is not None:
            hooks = [AMGGuidance(settings, index, threshold if (threshold and c3 > 0) else never,
                                 record=record, rows=rows)]
        stats: dict = {}
        with torch.no_grad():
            x = sample(backend.eps, x_T, sd_scheduler("ddim"), steps, cond=None, uncond=labels, hooks=hooks,
                       generator=gens, stats=stats)
        out.append(x.clamp(-1, 1).cpu())
        evals += stats["model_evals_per_image"] * len(part)
    nan = np.full((n, S), np.nan, np.float32)
    return DigitsRun(torch.cat(out), record.get("sigma", nan), record.get("fired", nan),
                     (time.time() - t0) / n, evals / n)
