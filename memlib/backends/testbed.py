"""The embedded testbed's pixel-space text-to-image model behind the ``Backend`` interface; ``DigitsBackend`` does
the same for the digits DDPMs (``memlib.testbed.digits``)."""
from __future__ import annotations

import torch

from ..device import autocast
from ..schedule import sd_scheduler
from ..testbed.model import TextToImageModel


class _PixelSDBackend:
    """What the embedded pixel-space models share: images in [-1, 1], Stable Diffusion v1's schedule, and fp32
    weights whose forward passes may run in half precision on a GPU (``precision``, by autocast)."""

    precision = torch.float32   # set per backend by make_backend (memlib.device.Compute.dtype)

    def _forward(self, run, x: torch.Tensor) -> torch.Tensor:
        """``run()`` under the backend's precision, the result in ``x``'s dtype (a no-op in fp32)."""
        if self.precision == torch.float32:
            return run()
        with autocast(self.device, self.precision):
            out = run()
        return out.to(x.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def scheduler(self, kind: str = "ddim"):
        return sd_scheduler(kind)


class TestbedBackend(_PixelSDBackend):
    """The pixel-space testbed model behind the ``Backend`` interface."""
    __test__ = False  # not a pytest test class

    name = "testbed"

    ref = None   # the TestbedRef it was loaded from (set by make_backend)

    def __init__(self, model: TextToImageModel, testbed=None, precision: torch.dtype = torch.float32):
        self.model, self.precision = model.eval(), precision
        self.testbed = testbed                   # memlib.testbed.build.Testbed (data, checkpoint), when loaded
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
        return self._forward(lambda: self.model.eps(x, t, emb), x)

    @property
    def device(self) -> torch.device:
        return self.model.device


class DigitsBackend(_PixelSDBackend):
    """A digits ``UNet2DModel`` (pixel space, 1 x 8 x 8, SD v1's schedule, eps-prediction) behind the ``Backend``
    interface. Unconditional models take ``emb=None``; class-conditional ones take integer labels as ``emb``
    (label ``n_classes`` is the null label classifier-free guidance uses as its unconditional branch)."""

    tokenizer = None

    def __init__(self, unet, n_classes: int = 0, name: str = "digits", meta: dict | None = None,
                 precision: torch.dtype = torch.float32):
        self.unet, self.n_classes, self.name, self.meta = unet.eval(), n_classes, name, meta or {}
        self.precision = precision
        size = unet.config.sample_size
        self.sample_shape = (unet.config.in_channels, size, size)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no text encoder; pass class labels (or None) as conditioning")

    encode_prompts = encode

    def labels(self, classes: list[int] | None) -> torch.Tensor | None:
        """Conditioning for ``classes`` (None: unconditional, or the null label for a class-conditional model)."""
        if not self.n_classes:
            if classes is not None:
                raise ValueError(f"{self.name} is unconditional; sample with cond=None")
            return None
        if classes is None:
            return torch.tensor([self.n_classes], device=self.device)
        bad = [c for c in classes if not 0 <= int(c) < self.n_classes]
        if bad:
            raise ValueError(f"class labels {bad} outside 0..{self.n_classes - 1}")
        return torch.as_tensor(classes, device=self.device)

    def eps(self, x, t, emb):
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return self._forward(lambda: self.unet(x, t, class_labels=emb, return_dict=False)[0], x)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device
