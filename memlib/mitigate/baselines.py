"""Baseline mitigations, each with its strength knob.

Prompt augmentations (Somepalli et al., "Understanding and Mitigating Copying in Diffusion Models", NeurIPS 2023;
the variants in Wen et al.'s reference code): insert ``k`` random vocabulary tokens (ids < 49400), ``k`` random
numbers, or ``k`` repeats of the caption's own words at random word boundaries. The rewritten prompt keeps the
original's noise (``noise_keys``), so the only change is the text. Draws are seeded by (seed, prompt), so a
prompt gets the same rewrite in any list. ``truncated`` records prompts the rewrite pushed past the text
encoder's context: their tail (on the testbed, often the planted trigger) is cut, a confound to report.

Embedding noise: e' = e + sigma * rms(e) * z on every position but BOS (z ~ N(0, I), seeded by prompt).
Lower guidance: sample at guidance scale s (3 is the testbed default; 0 is unconditional).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..generation import noise_seed
from .method import Context, Knob, Plan
from .registry import register

RANDOM_TOKEN_MAX_ID = 49400


def _rng(seed: int, prompt: str, salt: str) -> np.random.Generator:
    h = hashlib.sha256(f"{seed}|{salt}|{prompt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _insert(prompt: str, words: list[str], rng: np.random.Generator) -> str:
    toks = prompt.split()
    for w in words:
        toks.insert(int(rng.integers(0, len(toks) + 1)), w)
    return " ".join(toks)


def _random_token_words(tokenizer, k: int, rng: np.random.Generator) -> list[str]:
    out = []
    while len(out) < k:
        word = "".join(tokenizer.decode([int(rng.integers(0, RANDOM_TOKEN_MAX_ID))]).split())  # one word
        if word:
            out.append(word)
    return out


def augment_prompts(prompts: list[str], kind: str, k: int, tokenizer, seed: int = 0) -> list[str]:
    """Each prompt with ``k`` insertions of ``kind``: 'token', 'number' or 'repeat'."""
    out = []
    for p in prompts:
        rng = _rng(seed, p, kind)
        if kind == "token":
            words = _random_token_words(tokenizer, k, rng)
        elif kind == "number":
            words = [str(int(rng.integers(0, 10 ** int(rng.integers(1, 5))))) for _ in range(k)]
        elif kind == "repeat":
            own = p.split() or [p]
            words = [own[int(rng.integers(len(own)))] for _ in range(k)]
        else:
            raise ValueError(f"augmentation kind {kind!r}: choose 'token', 'number' or 'repeat'")
        out.append(_insert(p, words, rng))
    return out


def _truncated(tokenizer, prompts: list[str]) -> np.ndarray:
    limit = getattr(tokenizer, "context_length", 77) - 2
    return np.array([len(tokenizer.token_ids(p)) > limit if hasattr(tokenizer, "token_ids") else False
                     for p in prompts])


def _augmentation(kind: str):
    def build(ctx: Context, k: int) -> Plan:
        tok = ctx.backend.tokenizer
        new = augment_prompts(ctx.prompts, kind, k, tok, ctx.gen_cfg.seed)
        return Plan(new, noise_keys=list(ctx.prompts), acted=np.array([a != b for a, b in zip(new, ctx.prompts)]),
                    info={"truncated": _truncated(tok, new)})
    return build


def _embedding_noise(ctx: Context, sigma: float) -> Plan:
    with torch.no_grad():
        emb = ctx.backend.encode_prompts(ctx.prompts)
    noisy = emb.clone()
    for i, p in enumerate(ctx.prompts):
        g = torch.Generator().manual_seed(noise_seed(ctx.gen_cfg.seed, -1, "embedding-noise|" + p))
        z = torch.randn(emb[i, 1:].shape, generator=g).to(emb.device, emb.dtype)
        noisy[i, 1:] += sigma * emb[i, 1:].pow(2).mean().sqrt() * z
    return Plan(list(ctx.prompts), cond_override=noisy, acted=np.full(len(ctx.prompts), sigma > 0))


def _lower_guidance(ctx: Context, scale: float) -> Plan:
    from dataclasses import replace
    return Plan(list(ctx.prompts), gen_cfg=replace(ctx.gen_cfg, guidance_scale=float(scale)),
                acted=np.full(len(ctx.prompts), scale != ctx.gen_cfg.guidance_scale))


def _none(ctx: Context, _value) -> Plan:
    return Plan(list(ctx.prompts), acted=np.zeros(len(ctx.prompts), dtype=bool))


register("none", Knob("none", (0,), 0, 0, integer=True, none_value=0), _none,
         description="plain classifier-free guidance")
register("random_token", Knob("tokens", (1, 2, 4, 6, 8), 0, 64, integer=True, none_value=0),
         _augmentation("token"), description="Somepalli et al.: random vocabulary tokens inserted")
register("random_number", Knob("numbers", (1, 2, 4, 6, 8), 0, 64, integer=True, none_value=0),
         _augmentation("number"), description="random numbers inserted")
register("word_repeat", Knob("repeats", (1, 2, 4, 6, 8), 0, 64, integer=True, none_value=0),
         _augmentation("repeat"), description="caption words repeated")
register("embedding_noise", Knob("sigma", (0.1, 0.25, 0.5, 1.0, 2.0), 0.0, 100.0, none_value=0.0),
         _embedding_noise, description="Gaussian noise on the text embedding (x its rms)")
register("lower_guidance", Knob("guidance_scale", (2.0, 1.5, 1.0, 0.5, 0.0), 0.0, 50.0),
         _lower_guidance, description="a lower classifier-free guidance scale")
