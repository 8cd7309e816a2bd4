"""Batched generation for lists of prompts, recording Wen et al.'s text-conditional noise norm on the way.

Every generation (prompt p, generation g) draws its initial noise from a seed derived from (seed, g, prompt
text), so a prompt gets the same noises whatever list or batch it is in. At every step the sampler's hook
records, per image, ||eps(x_t, e_p) - eps(x_t, e_empty)||_2 over the whole sample tensor (Wen et al. 2024,
Sec. 3.1; no guidance scale), and ||eps(x_t, e_empty)||_2, at no extra model cost.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config, ConfigError, check_range
from .sampling import Hook, StepState, sample, seeded_noise


@dataclass
class GenerationConfig(Config):
    num_steps: int = 50            # DDIM steps (SD spacing: the first is t = 981)
    guidance_scale: float = 3.0    # classifier-free guidance scale s
    n_gens: int = 4                # generations per prompt
    batch_size: int = 128          # images per model call (each call also runs the unconditional branch)
    seed: int = 0                  # base seed of the initial noises
    scheduler: str = "ddim"        # 'ddim' (eta 0) or 'ddpm'

    def validate(self) -> None:
        check_range("num_steps", self.num_steps, 1, 1000)
        check_range("guidance_scale", self.guidance_scale, 0.0, 50.0)
        check_range("n_gens", self.n_gens, 1, 1024)
        check_range("batch_size", self.batch_size, 1)
        if self.scheduler not in ("ddim", "ddpm"):
            raise ConfigError(f"parameter 'scheduler' = {self.scheduler!r}; choose 'ddim' or 'ddpm'")


@dataclass
class Generation:
    prompts: list[str]
    images: torch.Tensor | None    # (P, G, C, H, W) decoded to [0, 1]; None when stopped early
    samples: torch.Tensor | None   # (P, G, C, H, W) raw x_0 (pixels in [-1, 1] or latents)
    text_norm: np.ndarray          # (P, G, steps) ||eps_c - eps_u||_2 per generation and step
    uncond_norm: np.ndarray        # (P, G, steps) ||eps_u||_2
    timesteps: list[int]
    seconds: float


def noise_seed(seed: int, gen: int, prompt: str) -> int:
    h = hashlib.sha256(f"{seed}|{gen}|{prompt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


class NormRecorder:
    """Hook: store per-image ||eps_c - eps_u||_2 and ||eps_u||_2 at every step."""

    def __init__(self):
        self.text, self.uncond, self.timesteps = [], [], []

    def __call__(self, s: StepState) -> None:
        self.text.append((s.eps_cond - s.eps_uncond).flatten(1).norm(dim=1).cpu())
        self.uncond.append(s.eps_uncond.flatten(1).norm(dim=1).cpu())
        self.timesteps.append(s.t)


def generate(backend, prompts: Sequence[str], cfg: GenerationConfig | None = None, stop_after: int | None = None,
             extra_hooks: Callable[[list[int]], list[Hook]] | None = None, progress: bool = True,
             keep_images: bool = True) -> Generation:
    """Generate ``cfg.n_gens`` samples per prompt in batches of ``cfg.batch_size`` images.

    ``stop_after=k`` runs only the first k sampling steps (detection); ``extra_hooks(rows)`` may add hooks per
    batch (rows are flat indices p * n_gens + g).
    """
    cfg = cfg or GenerationConfig()
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; give at least one prompt")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
    P, G = len(prompts), cfg.n_gens
    rows = [(p, g) for p in range(P) for g in range(G)]
    sched = backend.scheduler(cfg.scheduler)
    with torch.no_grad():
        uncond = backend.encode_prompts([""])
    text_n, unc_n, outs = [], [], []
    t0 = time.time()
    timesteps: list[int] = []
    batches = range(0, len(rows), cfg.batch_size)
    for s in tqdm(batches, disable=not progress, desc="generating", unit="batch"):
        chunk = rows[s:s + cfg.batch_size]
        batch_prompts = [prompts[p] for p, _ in chunk]
        uniq = sorted(set(batch_prompts), key=batch_prompts.index)
        with torch.no_grad():
            emb_u = backend.encode_prompts(uniq)
        emb = emb_u[[uniq.index(p) for p in batch_prompts]]
        x_T = seeded_noise(backend.sample_shape, [noise_seed(cfg.seed, g, prompts[p]) for p, g in chunk],
                           backend.device)
        rec = NormRecorder()
        hooks = [rec] + (extra_hooks([p * G + g for p, g in chunk]) if extra_hooks else [])
        gen = torch.Generator(device=backend.device).manual_seed(cfg.seed + s)
        x0 = sample(backend.eps, x_T, sched, cfg.num_steps, emb, uncond, cfg.guidance_scale, hooks,
                    stop_after=stop_after, generator=gen)
        text_n.append(torch.stack(rec.text, 1))
        unc_n.append(torch.stack(rec.uncond, 1))
        timesteps = rec.timesteps
        if keep_images and stop_after is None:
            outs.append(x0.cpu())
    seconds = time.time() - t0
    steps = len(timesteps)
    samples = torch.cat(outs).reshape(P, G, *backend.sample_shape) if outs else None
    images = None
    if samples is not None:
        with torch.no_grad():
            images = torch.cat([backend.decode(c.to(backend.device)).cpu() for c in samples.flatten(0, 1).split(64)])
        images = images.reshape(P, G, *images.shape[1:])
    return Generation(prompts, images, samples, torch.cat(text_n).reshape(P, G, steps).numpy(),
                      torch.cat(unc_n).reshape(P, G, steps).numpy(), timesteps, seconds)
