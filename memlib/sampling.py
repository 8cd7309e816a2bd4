"""Classifier-free-guided DDIM/DDPM sampling as a plain function with per-step hooks (k-diffusion style).

At every step ONE batched model call gives eps_uncond, eps_cond and any extra branches (Ho & Salimans 2022):
    eps = eps_u + s * (eps_c - eps_u)                    (AMG Eq. 7)
    x0_hat = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)     (AMG Eq. 12, a_t = alpha_bar_t)
Hooks see a ``StepState`` holding all of these *before* the scheduler step, and may return a replacement
noise estimate (AMG adds guidance terms, PRSS swaps the prompt). diffusers' pipeline callbacks run after the
step and do not expose the noise predictions, hence this loop. What a hook may do:

- return a new eps for this step (later hooks see it, ``x0_hat`` follows);
- change ``state.cond``, ``state.uncond``, ``state.guidance_scale`` or ``state.branches``: the change holds from
  the next step's model call on (this step's model call has already run);
- request extra conditioning branches (AMG's nearest-neighbour caption, PRSS's original prompt) in
  ``state.branches`` ({name: conditioning of batch B or 1}); they join the rows of the same batched call as the
  two CFG branches and their outputs appear in ``state.eps_branches[name]``;
- take gradients through x0_hat with ``state.grad_of(fn)`` (as k-diffusion's CLIP-guided sampler wraps the model).

Wen et al.'s text-conditional magnitude ``magnitude`` (Sec. 3.1) is defined here so core modules can record it;
``memlib.wen.magnitude`` builds on it. Every model call made through ``state.denoise`` is counted: ``sample``
reports model evaluations per image (NFE; rows passed through the model / batch size) in ``stats``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def magnitude(eps_cond: torch.Tensor, eps_uncond: torch.Tensor) -> torch.Tensor:
    """Per image ||eps(x_t, e_p) - eps(x_t, e_empty)||_2 over the whole sample tensor: (B, ...) -> (B,)
    (Wen et al., ICLR 2024, Sec. 3.1; no guidance scale). Differentiable."""
    return (eps_cond - eps_uncond).flatten(1).norm(dim=1)


def _x0(x: torch.Tensor, eps: torch.Tensor, a: float) -> torch.Tensor:
    return (x - (1 - a) ** 0.5 * eps) / a ** 0.5


def _cfg(eps_cond, eps_uncond, scale: float, cond) -> torch.Tensor:
    return eps_uncond + scale * (eps_cond - eps_uncond) if cond is not None else eps_cond


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
    guidance_scale: float           # a change holds from the next step on
    cond: Optional[torch.Tensor]    # a change holds from the next step on
    uncond: Optional[torch.Tensor]  # a change holds from the next step on
    denoise: Denoiser               # the model (counted in the NFE), for hooks that rerun it (Wen, AMG)
    num_steps: int
    scheduler: object = None        # the diffusers scheduler the sampler steps
    branches: dict[str, torch.Tensor] = field(default_factory=dict)      # extra conditionings, from the next step
    eps_branches: dict[str, torch.Tensor] = field(default_factory=dict)  # their eps at this step

    def x0_from(self, eps: torch.Tensor) -> torch.Tensor:
        return _x0(self.x, eps, self.alpha_bar)

    def grad_of(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """d/dx_t of sum(fn(x0_hat)), same shape as x_t; ``fn`` maps x0_hat (B, ...) to per-image values (B,).

        Reruns the CFG branches (one batched call, counted) with autograd on a leaf copy of x_t, x0_hat from the
        guided estimate of the state's current cond, uncond and guidance_scale (an eps a hook returned is not a
        function of x_t, so it is not included). Images are independent, so row j is image j's own gradient."""
        with torch.enable_grad():
            x, n = self.x.detach().requires_grad_(True), self.x.shape[0]
            ec, eu = guided_eps(self.denoise, x, self.t, _expand(self.cond, n), _expand(self.uncond, n))
            x0 = _x0(x, _cfg(ec, eu, self.guidance_scale, self.cond), self.alpha_bar)
            (grad,) = torch.autograd.grad(fn(x0).sum(), x)
        return grad


Hook = Callable[[StepState], Optional[torch.Tensor]]


def seeded_rows(shape: tuple[int, ...], seeds: Iterable[int], device="cpu"
                ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One N(0, I) draw per seed, and each row's CPU generator, positioned after that draw, for the row's later
    noises (stochastic scheduler steps). Neither depends on batch composition or on the device."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device), gens


def seeded_noise(shape: tuple[int, ...], seeds: Iterable[int], device="cpu") -> torch.Tensor:
    """One N(0, I) draw per seed, independent of batch composition (so results do not depend on batching)."""
    return seeded_rows(shape, seeds, device)[0]


def _expand(c: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    if c is None or c.shape[0] == n:
        return c
    if c.shape[0] == 1:
        return c.expand(n, *c.shape[1:])
    raise ValueError(f"conditioning batch {c.shape[0]} does not match sample batch {n} (or 1)")


def denoise_branches(denoise: Denoiser, x: torch.Tensor, t, conds: Sequence) -> list[torch.Tensor]:
    """eps(x_t, c) for every conditioning in ``conds`` (each of x's batch) from ONE model call on stacked rows."""
    tt = torch.as_tensor(t, device=x.device)
    if len(conds) == 1:
        return [denoise(x, tt, conds[0])]
    if any(c is None for c in conds):
        raise ValueError("extra conditioning branches need a conditioning tensor for every branch, uncond too")
    return list(denoise(torch.cat([x] * len(conds)), tt, torch.cat(list(conds))).chunk(len(conds)))


def guided_eps(denoise: Denoiser, x: torch.Tensor, t, cond, uncond) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_uncond) from one batched call; without ``cond`` both are the unconditional output."""
    if cond is None:
        e = denoise_branches(denoise, x, t, [uncond])[0]
        return e, e
    eu, ec = denoise_branches(denoise, x, t, [uncond, cond])
    return ec, eu


class _Counted:
    """The denoiser, counting calls and the rows (images x branches) passed through it."""

    def __init__(self, denoise: Denoiser):
        self.denoise, self.calls, self.rows = denoise, 0, 0

    def __call__(self, x, t, c):
        self.calls += 1
        self.rows += x.shape[0]
        return self.denoise(x, t, c)


def sample(denoise: Denoiser, x_T: torch.Tensor, scheduler, num_steps: int = 50, cond=None, uncond=None,
           guidance_scale: float = 3.0, hooks: Iterable[Hook] = (), stop_after: int | None = None,
           eta: float = 0.0, generator: torch.Generator | list[torch.Generator] | None = None,
           progress: bool = False, branches: dict[str, torch.Tensor] | None = None,
           stats: dict | None = None) -> torch.Tensor:
    """Run a diffusers DDIM or DDPM scheduler from ``x_T``; returns x_0 (or x after ``stop_after`` steps).

    ``cond``/``uncond``: conditioning for the two branches (text embeddings, class labels, or ``None`` for an
    unconditional model); a batch of 1 is broadcast. ``stop_after=k`` runs only the first k steps
    (first-step detection costs exactly one batched model call). ``generator``: one, or a list of one per row
    (diffusers then draws each row's step noise from its own generator, so DDPM does not depend on batching).
    ``branches``: extra conditionings evaluated from the first step (see the module docstring). ``stats``, if
    given, receives ``model_calls`` and ``model_evals_per_image`` (rows through the model / batch size).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    hooks = list(hooks)
    scheduler.set_timesteps(num_steps, device=x_T.device)
    n = x_T.shape[0]
    model = _Counted(denoise)
    branches = dict(branches or {})   # hooks may edit it; the caller's dict stays as given
    x = x_T
    timesteps = scheduler.timesteps if stop_after is None else scheduler.timesteps[:stop_after]
    step_kwargs = {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
        cond, uncond = _expand(cond, n), _expand(uncond, n)
        conds = [uncond] + ([cond] if cond is not None else []) + [_expand(c, n) for c in branches.values()]
        with torch.no_grad():  # hooks that need gradients re-enter autograd through state.denoise
            out = denoise_branches(model, x, t, conds)
        eu = out[0]
        ec = out[1] if cond is not None else eu
        eps = _cfg(ec, eu, guidance_scale, cond)
        a = float(scheduler.alphas_cumprod[int(t)])
        state = StepState(i, int(t), x, ec, eu, eps, None, a, guidance_scale, cond, uncond, model, num_steps,
                          scheduler, branches, dict(zip(branches, out[len(out) - len(branches):])))
        state.x0_hat = state.x0_from(eps)
        for hook in hooks:
            new = hook(state)
            if new is not None:
                if new.shape != eps.shape:
                    raise ValueError(f"hook {hook!r} returned eps of shape {tuple(new.shape)}, "
                                     f"expected {tuple(eps.shape)}")
                state.eps, state.x0_hat = new, state.x0_from(new)
        cond, uncond, guidance_scale, branches = state.cond, state.uncond, state.guidance_scale, state.branches
        with torch.no_grad():
            x = scheduler.step(state.eps, t, x, generator=generator, return_dict=False, **step_kwargs)[0]
    if stats is not None:
        stats.update(model_calls=model.calls, model_evals_per_image=model.rows / n)
    return x
