"""Noise-schedule maths shared by every model: Stable Diffusion v1's schedule, the forward noising step, and
conversions between a network's raw output and the noise prediction every sampler and metric works on.

- ``sd_scheduler``: SD v1's schedule (scaled-linear beta 0.00085..0.012, DDIM "leading" spacing with offset 1, so
  50 steps start at t = 981). The testbed uses it because Wen et al.'s first-step detection depends on it (see the
  shared notes: under linear beta, sqrt(alpha_bar) at t~980 is ten times smaller and the first noise prediction
  carries no prompt signal). DDIM's ``clip_sample`` is off: clipping x0_hat to [-1, 1] pulls pixel-space
  generations off memorized images.
- ``add_noise``: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, Eq. 4).
- ``training_target`` / ``eps_from_output``: eps or v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022).
"""
from __future__ import annotations

import torch

SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   prediction_type="epsilon")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def sd_scheduler(kind: str = "ddim", **overrides):
    """A diffusers scheduler with SD v1's schedule; ``kind`` is 'ddim' or 'ddpm'."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = dict(SD_SCHEDULE, clip_sample=False, steps_offset=1, timestep_spacing="leading")
    cfg.update(overrides)
    if kind == "ddim":
        return DDIMScheduler(set_alpha_to_one=False, **cfg)
    if kind == "ddpm":
        return DDPMScheduler(**cfg)
    raise ValueError(f"unknown scheduler kind {kind!r}; choose 'ddim' or 'ddpm'")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The forward process at cumulative alpha ``abar`` (broadcastable to ``x0``)."""
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def eps_from_output(out, x, t, prediction_type: str, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A model's raw output -> noise prediction (memlib's samplers and metrics all work on eps)."""
    if prediction_type == "epsilon":
        return out
    a = alphas_cumprod.to(x.device)[torch.as_tensor(t, device=x.device).long().reshape(-1)].reshape(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * x
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


def training_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the raw output is trained to match (``abar`` broadcastable to x0)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


def first_step_alpha_bar(scheduler, num_steps: int) -> float:
    """alpha_bar at the first of ``num_steps`` sampling steps (t = 981 for SD's 50 DDIM steps)."""
    scheduler.set_timesteps(num_steps)
    return float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
