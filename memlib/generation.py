"""Batched generation for lists of prompts, recording Wen et al.'s text-conditional noise norm on the way.

Every generation (prompt p, generation g) draws its initial noise from a seed derived from (seed, g, key), the
key being the prompt text unless ``noise_keys`` names another (a method that rewrites a prompt keeps the
original's noise); so a prompt gets the same noises whatever list or batch it is in. The same per-row seed then
draws the row's DDPM step noises, so stochastic sampling does not depend on batching either. At every step the
sampler's hook records, per image, ||eps(x_t, e_p) - eps(x_t, e_empty)||_2 over the whole sample tensor (Wen et
al. 2024, Sec. 3.1, ``memlib.sampling.magnitude``; no guidance scale), and ||eps(x_t, e_empty)||_2, at no extra
model cost. ``cond_override`` replaces a prompt's text embedding (optimized or perturbed embeddings).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config, ConfigError, check_range
from .device import batch_size
from .sampling import Hook, StepState, magnitude, sample, seeded_rows

# activation bytes per element of a sample in one guided model call: a rough guess (Stable Diffusion at 512 px,
# 16,384 latent elements: 0.5 GB an image), used only to keep a GPU batch within free memory
ACTIVATION_BYTES_PER_ELEMENT = 32768


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
    model_evals_per_image: float | None = None   # NFE: images through the model per generated image, hooks' too


def noise_seed(seed: int, gen: int, prompt: str) -> int:
    h = hashlib.sha256(f"{seed}|{gen}|{prompt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


class NormRecorder:
    """Hook: store per-image ||eps_c - eps_u||_2 and ||eps_u||_2 at every step."""

    def __init__(self):
        self.text, self.uncond, self.timesteps = [], [], []

    def __call__(self, s: StepState) -> None:
        self.text.append(magnitude(s.eps_cond, s.eps_uncond).cpu())
        self.uncond.append(s.eps_uncond.flatten(1).norm(dim=1).cpu())
        self.timesteps.append(s.t)


def _overrides(cond_override, P: int) -> dict[int, torch.Tensor]:
    """{prompt index: that prompt's embedding} from a dict of them or a (P, ...) tensor."""
    if cond_override is None:
        return {}
    if isinstance(cond_override, torch.Tensor):
        if cond_override.shape[0] != P:
            raise ValueError(f"cond_override has {cond_override.shape[0]} rows for {P} prompts")
        return dict(enumerate(cond_override))
    bad = [p for p in cond_override if not 0 <= p < P]
    if bad:
        raise ValueError(f"cond_override names prompt index {bad[0]}, outside 0..{P - 1}")
    return dict(cond_override)


def _batch_cond(backend, idx: list[int], prompts: list[str], overrides: dict[int, torch.Tensor]) -> torch.Tensor:
    """Text embeddings of the batch's prompts: each distinct text encoded once, overridden prompts not at all."""
    texts = [prompts[p] for p in idx if p not in overrides]
    uniq = sorted(set(texts), key=texts.index)
    with torch.no_grad():
        emb_u = backend.encode_prompts(uniq) if uniq else None
    return torch.stack([overrides[p].to(backend.device) if p in overrides else emb_u[uniq.index(prompts[p])]
                        for p in idx])


def generate(backend, prompts: Sequence[str], cfg: GenerationConfig | None = None, stop_after: int | None = None,
             extra_hooks: Callable[[list[int]], list[Hook]] | None = None, progress: bool = True,
             keep_images: bool = True, noise_keys: Sequence[str] | None = None,
             cond_override: Mapping[int, torch.Tensor] | torch.Tensor | None = None,
             branches: Callable[[list[int]], dict[str, torch.Tensor]] | None = None) -> Generation:
    """Generate ``cfg.n_gens`` samples per prompt in batches of ``cfg.batch_size`` images.

    ``stop_after=k`` runs only the first k sampling steps (detection); ``extra_hooks(rows)`` may add hooks per
    batch (rows are flat indices p * n_gens + g). ``noise_keys[p]`` replaces prompt p's text in its noise seeds.
    ``cond_override``: {p: embedding} or a (P, ...) tensor used instead of encoding those prompts.
    ``branches(rows)``: extra conditioning branches per batch, in the CFG model call from the first step.
    """
    cfg = cfg or GenerationConfig()
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; give at least one prompt")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
    keys = prompts if noise_keys is None else list(noise_keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} noise_keys for {len(prompts)} prompts")
    P, G = len(prompts), cfg.n_gens
    overrides = _overrides(cond_override, P)
    rows = [(p, g) for p in range(P) for g in range(G)]
    sched = backend.scheduler(cfg.scheduler)
    with torch.no_grad():
        uncond = backend.encode_prompts([""])
    text_n, unc_n, outs = [], [], []
    t0 = time.time()
    timesteps: list[int] = []
    evals = 0.0
    # on a GPU, no more images per call than its free memory holds (the results do not depend on the batching)
    step = batch_size(cfg.batch_size, math.prod(backend.sample_shape) * ACTIVATION_BYTES_PER_ELEMENT, backend.device)
    batches = range(0, len(rows), step)
    for s in tqdm(batches, disable=not progress, desc="generating", unit="batch"):
        chunk = rows[s:s + step]
        flat = [p * G + g for p, g in chunk]
        emb = _batch_cond(backend, [p for p, _ in chunk], prompts, overrides)
        # each row's generator draws its x_T, then its stochastic step noises: nothing depends on the batch
        x_T, gens = seeded_rows(backend.sample_shape, [noise_seed(cfg.seed, g, keys[p]) for p, g in chunk],
                                backend.device)
        rec = NormRecorder()
        hooks = [rec] + (extra_hooks(flat) if extra_hooks else [])
        stats: dict = {}
        x0 = sample(backend.eps, x_T, sched, cfg.num_steps, emb, uncond, cfg.guidance_scale, hooks,
                    stop_after=stop_after, generator=gens, branches=branches(flat) if branches else None,
                    stats=stats)
        evals += stats["model_evals_per_image"] * len(chunk)
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
                      torch.cat(unc_n).reshape(P, G, steps).numpy(), timesteps, seconds, evals / len(rows))
