"""Wen et al.'s first-step score of an *ideal* denoiser on the testbed, from the data alone: a design check of
the testbed (can its data show first-step detection at all?), not a result about any model."""
from __future__ import annotations

import numpy as np

from ..testbed.data import Prompt, render_captions


def ideal_first_step_scores(data, prompts: list[Prompt], alpha_bar: float, n_renderings: int = 200,
                            seed: int = 0) -> np.ndarray:
    """Wen's first-step score of an *ideal* denoiser, from the data alone (no model): a design check.

    At the first step x_t carries almost no signal, so the ideal x0_hat(x_t, c) is about E[x0 | c] and
    eps_cond - eps_uncond = -sqrt(abar / (1 - abar)) * (E[x0 | c] - E[x0]). E[x0 | c] is the mean of the
    training rows captioned ``c``, or, for an unseen ordinary caption, of ``n_renderings`` fresh renderings.
    Returns (len(prompts),) norms on the scale of ``memlib.wen.magnitude`` scores.
    """
    x = data.images.double()
    mean_all = x.mean(0)
    captions = np.asarray(data.captions)
    out = []
    for i, p in enumerate(prompts):
        rows = np.flatnonzero(captions == p.text)
        if len(rows):
            cond_mean = x[rows].mean(0)
        elif p.group == "heldout":
            cond_mean = render_captions([p.text], n_renderings, seed=seed + i, size=x.shape[-1]).double().mean(0)
        else:
            raise ValueError(f"no ideal conditional mean for {p.group} prompt {p.text!r}")
        out.append(float((cond_mean - mean_all).norm()))
    return np.sqrt(alpha_bar / (1 - alpha_bar)) * np.array(out)
