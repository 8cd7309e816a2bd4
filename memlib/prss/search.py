"""Semantic prompt search (SS; Chen et al., CVPR 2025, Sec. 4.2), as implemented in the released code.

At the first step, on the initial noises the original prompt would get (it is the noise key), compute Wen's
magnitude of the original prompt and of each candidate rewrite; the joint norm over the prompt's n noises is
used, as PE's loss is, so one lambda serves both. If the original is at most lambda, keep it (nothing flagged);
else take the first candidate (in the source's order) at most lambda, else the argmin over the original and all
candidates (the original may win). Magnitudes are computed once per prompt, so a lambda sweep costs nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..first_step_magnitude import first_step, initial_noises, joint_losses
from ..generation import GenerationConfig


@dataclass
class SearchTable:
    """Each prompt's candidates and first-step magnitudes, original first: ``texts[p][0]`` is prompt p."""
    texts: list[list[str]]
    magnitudes: list[np.ndarray]
    evals_per_image: float            # model evaluations per generated image the table cost

    def select(self, lam: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(chosen prompt per prompt, flagged (original above lambda), index chosen: 0 = the original)."""
        chosen = np.array([select(m, lam) for m in self.magnitudes])
        flagged = np.array([m[0] > lam for m in self.magnitudes])
        return [t[i] for t, i in zip(self.texts, chosen)], flagged, chosen


def select(magnitudes: np.ndarray, lam: float) -> int:
    """The released code's rule: 0 if the original is <= lam, else the first candidate <= lam, else the argmin."""
    m = np.asarray(magnitudes, float)
    if m[0] <= lam:
        return 0
    below = np.flatnonzero(m[1:] <= lam)
    return int(below[0] + 1) if len(below) else int(np.argmin(m))


@torch.no_grad()
def candidate_magnitudes(backend, prompts: list[str], source, gen_cfg: GenerationConfig,
                         batch: int = 64) -> SearchTable:
    """The joint first-step magnitude of each prompt and each of its candidates (``source(prompt)``)."""
    if not prompts:
        raise ValueError("the prompt list is empty; give at least one prompt")
    texts = []
    for p in prompts:
        cands = list(source(p))
        if p in cands:
            raise ValueError(f"the candidate source returned the prompt itself for {p!r}")
        texts.append([p] + cands)
    n, t = gen_cfg.n_gens, first_step(backend, gen_cfg)
    empty = backend.encode_prompts([""])
    mags = []
    for p, row in zip(prompts, texts):
        x = initial_noises(backend, [p], gen_cfg)
        eps_u = backend.eps(x, torch.full((n,), t, device=x.device), empty.expand(n, *empty.shape[1:]))
        out = []
        for s in range(0, len(row), batch):
            sub = row[s:s + batch]
            out.append(joint_losses(backend, backend.encode_prompts(sub), x.repeat(len(sub), 1, 1, 1), t,
                                    eps_u.repeat(len(sub), 1, 1, 1), n).cpu().numpy())
        mags.append(np.concatenate(out))
    evals = sum(len(r) + 1 for r in texts) / len(prompts)   # per prompt: each text over its n noises, + empty
    return SearchTable(texts, mags, evals)
