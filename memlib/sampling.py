"""Classifier-free-guided DDIM/DDPM sampling as a plain function with a per-step hook (k-diffusion style).

At every step one batched model call gives eps_uncond and eps_cond (Ho & Salimans 2022):
    eps = eps_u + s * (eps_c - eps_u)                    (AMG Eq. 7)
    x0_hat = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)     (AMG Eq. 12, a_t = alpha_bar_t)
Hooks see a ``StepState`` holding all of these *before* the scheduler step, and may return a replacement
noise estimate (AMG adds guidance terms, PRSS swaps the prompt). Wen et al.'s detection reads
||eps_c - eps_u|| from it at no extra model cost. diffusers' pipeline callbacks run after the step and do not
expose the noise predictions, hence this loop.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@dataclass
class StepState:
    """What a hook sees at step ``i`` (timestep ``t``); tensors have the batch first."""
    i: int
    t: int
    x: torch.Tensor                 # x_t
    eps_cond: torch.Tensor          # eps(x_t, e_p)
    eps_uncond: torch.Tensor        # eps(x_t, e_empty)
    eps: torch.Tensor               # guided estimate (after earlier hooks)
    x0_hat: torch.Tensor            # x0 predicted from ``eps``
    alpha_bar: float
    guidance_scale: float
    cond: Optional[torch.Tensor]
    uncond: Optional[torch.Tensor]
    denoise: Denoiser               # the model, for hooks that need gradients through it (AMG)
    num_steps: int

    def x0_from(self, eps: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar
        return (self.x - (1 - a) ** 0.5 * eps) / a ** 0.5


Hook = Callable[[StepState], Optional[torch.Tensor]]


def seeded_noise(shape: tuple[int, ...], seeds: Iterable[int], device="cpu") -> torch.Tensor:
    """One N(0, I) draw per seed, independent of batch composition (so results do not depend on batching)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device)


def _expand(c: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    if c is None or c.shape[0] == n:
        return c
    if c.shape[0] == 1:
        return c.expand(n, *c.shape[1:])
    raise ValueError(f"conditioning batch {c.shape[0]} does not match sample batch {n} (or 1)")


def guided_eps(denoise: Denoiser, x: torch.Tensor, t, cond, uncond) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_uncond) from one batched call; without ``cond`` both are the unconditional output."""
    tt = torch.as_tensor(t, device=x.device)
    if cond is None:
        e = denoise(x, tt, uncond)
        return e, e
    eu, ec = denoise(torch.cat([x, x]), tt, torch.cat([uncond, cond])).chunk(2)
    return ec, eu


def sample(denoise: Denoiser, x_T: torch.Tensor, scheduler, num_steps: int = 50, cond=None, uncond=None,
           guidance_scale: float = 3.0, hooks: Iterable[Hook] = (), stop_after: int | None = None,
           eta: float = 0.0, generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Run a diffusers DDIM or DDPM scheduler from ``x_T``; returns x_0 (or x after ``stop_after`` steps).

    ``cond``/``uncond``: conditioning for the two branches (text embeddings, class labels, or ``None`` for an
    unconditional model); a batch of 1 is broadcast. ``stop_after=k`` runs only the first k steps
    (first-step detection costs exactly one batched model call).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    hooks = list(hooks)
    scheduler.set_timesteps(num_steps, device=x_T.device)
    n = x_T.shape[0]
    cond, uncond = _expand(cond, n), _expand(uncond, n)
    x = x_T
    timesteps = scheduler.timesteps if stop_after is None else scheduler.timesteps[:stop_after]
    step_kwargs = {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
        with torch.no_grad():  # hooks that need gradients re-enter autograd through state.denoise
            ec, eu = guided_eps(denoise, x, t, cond, uncond)
        eps = eu + guidance_scale * (ec - eu) if cond is not None else ec
        a = float(scheduler.alphas_cumprod[int(t)])
        state = StepState(i, int(t), x, ec, eu, eps, None, a, guidance_scale, cond, uncond, denoise, num_steps)
        state.x0_hat = state.x0_from(eps)
        for hook in hooks:
            new = hook(state)
            if new is not None:
                if new.shape != eps.shape:
                    raise ValueError(f"hook {hook!r} returned eps of shape {tuple(new.shape)}, "
                                     f"expected {tuple(eps.shape)}")
                state.eps, state.x0_hat = new, state.x0_from(new)
        with torch.no_grad():
            x = scheduler.step(state.eps, t, x, generator=generator, return_dict=False, **step_kwargs)[0]
    return x
