"""Wen et al.'s inference-time mitigation (Wen, Liu, Chen, Lyu, ICLR 2024, Sec. 4.1, Eq. 5; reference code
``aug_prompt``): perturb the prompt embedding at x_T so that the text-conditional magnitude drops, then sample
with plain CFG and the perturbed embedding.

For each prompt p with its n generation noises x_T^j (the very noises generation will use):
    L_p(e) = || stack_j ( eps(x_T^j, e) - eps(x_T^j, e_empty) ) ||_2      (the joint norm over the n noises)
minimized over e from e_p with AdamW (lr 0.05, weight decay 0.01), at most ``max_iters`` updates, stopping as
soon as L_p <= l_target (checked before each update). The BOS row is not a parameter, so it stays exactly e_p's.
Prompts are optimized together in one batched model call per iteration, each with its own AdamW state (as the
reference loops over prompts one by one); a prompt that has converged takes no further step, so weight decay
never moves it, and a prompt already under l_target keeps e_p itself (zero iterations: generation unchanged).

Cost, in model evaluations per image: one unconditional pass, one conditional pass per loss evaluation and two
per backward pass (a backward costs about two forwards).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..generation import GenerationConfig, noise_seed
from ..sampling import seeded_rows


@dataclass
class PEResult:
    embeddings: torch.Tensor      # (P, L, D) the optimized embeddings (e_p where iterations == 0)
    iterations: np.ndarray        # (P,) AdamW updates taken
    loss_initial: np.ndarray      # (P,) L_p(e_p)
    loss_last: np.ndarray         # (P,) the last loss evaluated (<= l_target where converged)
    converged: np.ndarray         # (P,) reached l_target within max_iters
    seconds: float
    evals_per_image: float


def first_step(backend, gen_cfg: GenerationConfig) -> int:
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


def optimize_prompt_embeddings(backend, prompts: list[str], gen_cfg: GenerationConfig, l_target: float,
                               max_iters: int = 10, lr: float = 0.05, weight_decay: float = 0.01,
                               noise_keys: list[str] | None = None) -> PEResult:
    """Wen's Eq. 5 for every prompt at once (see the module docstring)."""
    if not prompts:
        raise ValueError("the prompt list is empty; give at least one prompt")
    if not np.isfinite(l_target) or l_target < 0 or max_iters < 0:
        raise ValueError(f"l_target = {l_target!r} and max_iters = {max_iters!r} must be >= 0 and finite")
    t0 = time.time()
    n, P = gen_cfg.n_gens, len(prompts)
    x = initial_noises(backend, list(noise_keys or prompts), gen_cfg)
    t = first_step(backend, gen_cfg)
    with torch.no_grad():
        e0 = backend.encode_prompts(list(prompts)).float()
        empty = backend.encode_prompts([""])
        eps_u = backend.eps(x, torch.full((len(x),), t, device=x.device), empty.expand(len(x), *empty.shape[1:]))
    rows = [torch.nn.Parameter(e0[p, 1:].clone()) for p in range(P)]        # BOS is not a parameter
    opts = [torch.optim.AdamW([r], lr=lr, weight_decay=weight_decay) for r in rows]
    iters = np.zeros(P, int)
    first, last = np.full(P, np.nan), np.full(P, np.nan)
    active = np.ones(P, bool)
    forwards = backwards = 0
    for _ in range(max_iters):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        emb = torch.stack([torch.cat([e0[p, :1], rows[p]]) for p in idx])
        sel = torch.as_tensor(np.concatenate([np.arange(p * n, (p + 1) * n) for p in idx]), device=x.device)
        with torch.enable_grad():
            loss = joint_losses(backend, emb, x[sel], t, eps_u[sel], n)
        forwards += len(idx)
        vals = loss.detach().cpu().numpy()
        first[idx] = np.where(np.isnan(first[idx]), vals, first[idx])
        last[idx] = vals
        done = vals <= l_target
        active[idx[done]] = False
        step = idx[~done]
        if not len(step):
            break
        grads = torch.autograd.grad(loss[torch.as_tensor(~done)].sum(), [rows[p] for p in step])
        backwards += len(step)
        for p, g in zip(step, grads):       # only prompts still above target: converged rows stay untouched
            rows[p].grad = g
            opts[p].step()
            rows[p].grad = None
            iters[p] += 1
    with torch.no_grad():
        out = torch.stack([torch.cat([e0[p, :1], rows[p].detach()]) if iters[p] else e0[p] for p in range(P)])
    converged = ~active & (last <= l_target)
    evals = (P + forwards + 2 * backwards) / P        # per prompt, each pass over its n noises = n images
    return PEResult(out, iters, first, last, converged, time.time() - t0, evals)


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
