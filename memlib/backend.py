"""One interface over the embedded testbed and real models (Stable Diffusion, pretrained DDPMs).

Every method (detection, explanation, AMG, PRSS) talks to a ``Backend``: it encodes prompts to the text
encoder's *output* embedding e (what Wen et al. differentiate against), predicts noise, and decodes samples
to images in [0, 1]. Sampling itself is ``memlib.sampling.sample(backend.eps, ...)``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .models import TextToImageModel, sd_scheduler


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


class TestbedBackend:
    """The pixel-space testbed model behind the ``Backend`` interface."""
    __test__ = False  # not a pytest test class

    name = "testbed"

    def __init__(self, model: TextToImageModel):
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.text_encoder = model.text_encoder   # transformers CLIPTextModel (input-embedding gradients use it)
        c = model.cfg
        self.sample_shape = (c.channels, c.image_size, c.image_size)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode(ids.to(self.device))

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        if len(prompts) == 0:
            raise ValueError("the prompt list is empty; give at least one prompt")
        return self.model.encode_prompts(list(prompts))

    def eps(self, x, t, emb):
        return self.model.eps(x, t, emb)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def scheduler(self, kind: str = "ddim"):
        return sd_scheduler(kind)

    @property
    def device(self) -> torch.device:
        return self.model.device
