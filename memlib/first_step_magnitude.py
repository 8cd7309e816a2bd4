"""Wen et al.'s text-conditional magnitude at the first sampling step, joint over a prompt's n generation noises
(Wen, Liu, Chen, Lyu, ICLR 2024; the loss of Sec. 4.1, Eq. 5):
    L_p(e) = || stack_j ( eps(x_T^j, e) - eps(x_T^j, e_empty) ) ||_2
on the very x_T^j that ``generate`` draws for the prompt. Wen's prompt-embedding optimization (``wen.mitigate_pe``)
minimizes it, and PRSS's semantic search (Chen et al., CVPR 2025, Sec. 4.2; ``prss.search``) thresholds it with
the same lambda, so one set of units serves both papers.
"""
from __future__ import annotations

import numpy as np
import torch

from .generation import GenerationConfig, noise_seed
from .sampling import seeded_rows


def first_step(backend, gen_cfg: GenerationConfig) -> int:
    """The sampler's first timestep (the one x_T is denoised at)."""
    sched = backend.scheduler(gen_cfg.scheduler)
    sched.set_timesteps(gen_cfg.num_steps)
    return int(sched.timesteps[0])


def initial_noises(backend, keys: list[str], gen_cfg: GenerationConfig) -> torch.Tensor:
    """(P * n, C, H, W): the x_T that ``generate`` draws for these prompts (keys) and seed."""
    seeds = [noise_seed(gen_cfg.seed, g, k) for k in keys for g in range(gen_cfg.n_gens)]
    return seeded_rows(backend.sample_shape, seeds, backend.device)[0]


def joint_losses(backend, emb: torch.Tensor, x: torch.Tensor, t: int, eps_u: torch.Tensor, n: int) -> torch.Tensor:
    """L_p for each of the A embeddings (A, L, D) over its n noises (A * n rows of x and eps_u)."""
    cond = emb.repeat_interleave(n, dim=0)
    diff = backend.eps(x, torch.full((len(x),), t, device=x.device), cond) - eps_u
    return diff.reshape(len(emb), -1).norm(dim=1)


@torch.no_grad()
def joint_first_step(backend, prompts: list[str], gen_cfg: GenerationConfig, batch: int = 64) -> np.ndarray:
    """L_p(e_p) per prompt: the unmitigated joint magnitude at x_T (to place l_target between held-out and
    memorized prompts on the development half)."""
    t = first_step(backend, gen_cfg)
    out = []
    for s in range(0, len(prompts), batch):
        sub = list(prompts[s:s + batch])
        x = initial_noises(backend, sub, gen_cfg)
        empty = backend.encode_prompts([""])
        eps_u = backend.eps(x, torch.full((len(x),), t, device=x.device), empty.expand(len(x), *empty.shape[1:]))
        out.append(joint_losses(backend, backend.encode_prompts(sub), x, t, eps_u, gen_cfg.n_gens).cpu().numpy())
    return np.concatenate(out)


def l_target_sweep(memorized: np.ndarray, heldout: np.ndarray, n: int = 6) -> list[float]:
    """``n`` l_target values from the held-out median up to the memorized median (rounded to 2 decimals),
    strongest (lowest) last: the range where the optimization acts on memorized prompts only."""
    lo, hi = float(np.median(heldout)), float(np.median(memorized))
    if not hi > lo:
        raise ValueError(f"memorized prompts' median magnitude {hi:.3g} is not above held-out {lo:.3g}: "
                         f"no l_target separates them")
    return [round(v, 2) for v in np.linspace(hi, lo, n)]
