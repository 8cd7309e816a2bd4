"""Detecting memorized prompts (Wen, Liu, Chen, Lyu, ICLR 2024, Sec. 3; Eq. "d" below).

    d(p) = 1/|S| sum_{t in S} 1/n sum_{j<n} || eps(x_t^j, e_p) - eps(x_t^j, e_empty) ||_2

per generation j, over the whole sample tensor, without the guidance scale; averaged over the first n
generations, then over the chosen steps S (the reference notebook's order). It is read off ordinary sampling
(``memlib.generation`` records it), so the first-step score costs one batched model call per batch of prompts.

Baseline: Carlini et al. (USENIX Security 2023, Sec. 4.2) tiled l2: images are cut into a grid of tiles, the
distance of two images is the largest l2 over corresponding tiles, and memorized prompts give generations
close to each other. As a score we use minus the mean pairwise tiled distance among a prompt's generations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import cached_arrays, weights_fingerprint
from ..device import compute_tag
from ..generation import GenerationConfig, generate

STEP_SETTINGS = {"first": 1, "first10": 10, "all": None}   # steps S: the first k sampling steps


def wen_score(text_norm: np.ndarray, n_steps: int | None = None, n_gens: int | None = None,
              steps: slice | None = None) -> np.ndarray:
    """(P, G, T) per-generation, per-step norms -> (P,) scores: mean over gens, then over steps."""
    tn = np.asarray(text_norm)
    if tn.ndim != 3:
        raise ValueError(f"text_norm must be (prompts, generations, steps), got shape {tn.shape}")
    g = tn.shape[1] if n_gens is None else n_gens
    if g > tn.shape[1]:
        raise ValueError(f"asked for {g} generations, only {tn.shape[1]} were recorded")
    sel = steps if steps is not None else slice(0, n_steps)
    return tn[:, :g, sel].mean(axis=1).mean(axis=1)


def tiled_l2(a: torch.Tensor, b: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Carlini et al.'s tiled distance between image batches (B, C, H, W): max over tiles of RMS difference."""
    B, C, H, W = a.shape
    if H % grid or W % grid:
        raise ValueError(f"image size {H}x{W} is not divisible into a {grid}x{grid} tile grid")
    d = (a - b) ** 2
    tiles = d.reshape(B, C, grid, H // grid, grid, W // grid).mean(dim=(1, 3, 5)).sqrt()
    return tiles.flatten(1).max(dim=1).values


def carlini_score(images: torch.Tensor, grid: int = 4) -> np.ndarray:
    """(P, G, C, H, W) generations -> (P,) minus the mean pairwise tiled l2 (higher = more alike)."""
    P, G = images.shape[:2]
    if G < 2:
        raise ValueError("the tiled-l2 baseline compares generations: it needs at least 2 per prompt")
    i, j = torch.triu_indices(G, G, 1)
    out = [tiled_l2(images[p, i], images[p, j], grid).mean().item() for p in range(P)]
    return -np.array(out)


def detection_sweep(backend, prompts: list[str], gen_cfg: GenerationConfig, cache_key: str,
                    chunk: int = 32, progress: bool = True, stop_after: int | None = None) -> dict[str, np.ndarray]:
    """Sampling for every prompt (``gen_cfg.n_gens`` generations; all steps, or the first ``stop_after``), in
    cached chunks of prompts.

    Returns ``text_norm`` (P, G, T), ``uncond_norm`` and, for full sampling, ``images`` (P, G, C, H, W). An
    interrupted sweep resumes from the finished chunks. The key holds the weights' content hash and (in ``cached_arrays``) the
    memlib code's hash, so new weights or changed code recompute; ``cache_key`` is a readable label on top.
    """
    if not prompts:
        raise ValueError("the prompt list is empty; give at least one prompt")
    weights = weights_fingerprint(backend)
    parts = []
    for s in range(0, len(prompts), chunk):
        sub = prompts[s:s + chunk]
        key = {"model": cache_key, "weights": weights, "compute": compute_tag(backend), "prompts": sub,
               "gen": gen_cfg.to_dict()}
        if stop_after is not None:  # (a key without it stays as it was, so full sweeps keep their cache)
            key["stop_after"] = stop_after

        def run(sub=sub):
            g = generate(backend, sub, gen_cfg, progress=progress, stop_after=stop_after,
                         keep_images=stop_after is None)
            out = {"text_norm": g.text_norm, "uncond_norm": g.uncond_norm}
            return out if stop_after is not None else {**out, "images": g.images.numpy()}

        parts.append(cached_arrays("detect", key, run))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def time_setting(backend, prompts: list[str], gen_cfg: GenerationConfig, n_steps: int | None) -> float:
    """Seconds per prompt to compute the score with the first ``n_steps`` steps (None: all)."""
    t0 = time.perf_counter()
    generate(backend, prompts, gen_cfg, stop_after=n_steps, progress=False, keep_images=False)
    return (time.perf_counter() - t0) / len(prompts)
