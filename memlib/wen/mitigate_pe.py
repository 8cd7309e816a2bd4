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

from ..first_step_magnitude import first_step, initial_noises, joint_losses
from ..generation import GenerationConfig


@dataclass
class PEResult:
    embeddings: torch.Tensor      # (P, L, D) the optimized embeddings (e_p where iterations == 0)
    iterations: np.ndarray        # (P,) AdamW updates taken
    loss_initial: np.ndarray      # (P,) L_p(e_p)
    loss_last: np.ndarray         # (P,) the last loss evaluated (<= l_target where converged)
    converged: np.ndarray         # (P,) reached l_target within max_iters
    seconds: float
    evals_per_image: float


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
