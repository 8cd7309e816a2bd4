"""The one interface every method talks to, over the embedded testbed and real models.

A ``Backend`` encodes prompts to the text encoder's *output* embedding e (what Wen et al. differentiate
against), predicts noise, and decodes samples to images in [0, 1]. Sampling itself is
``memlib.sampling.sample(backend.eps, ...)``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Backend(Protocol):
    name: str
    sample_shape: tuple[int, int, int]   # (C, H, W) of x_t: pixels for the testbed, latents for SD
    tokenizer: object                    # callable(list[str]) -> ids; token_strings(text); n_tokens(text)

    def encode(self, ids: torch.Tensor) -> torch.Tensor: ...
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor: ...
    def eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor: ...
    def decode(self, x: torch.Tensor) -> torch.Tensor: ...
    def scheduler(self, kind: str = "ddim"): ...

    @property
    def device(self) -> torch.device: ...
