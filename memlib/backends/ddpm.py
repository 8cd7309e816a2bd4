"""Pretrained pixel-space DDPMs behind the ``Backend`` interface (a diffusers ``UNet2DModel``, e.g.
google/ddpm-cifar10-32; unconditional, or class-conditional with labels as the conditioning)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..schedule import eps_from_output as _eps_from_output
from .diffusers_base import DiffusersBackend

class DDPMBackend(DiffusersBackend):
    """A pixel-space ``UNet2DModel`` (unconditional, or class-conditional with labels as ``emb``)."""

    tokenizer = None
    _parts = ("unet",)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, device="cpu", dtype=torch.float32,
                        local_files_only: bool | None = None, revision: str | None = None) -> "DDPMBackend":
        """Load e.g. google/ddpm-cifar10-32 (offline rules as ``StableDiffusionBackend.from_pretrained``)."""
        from diffusers import DDPMScheduler, UNet2DModel

        def load(src: str, local: bool):
            kw = dict(local_files_only=local, revision=revision)
            try:  # pipeline layout (unet/, scheduler/) ...
                sched, sub = DDPMScheduler.load_config(src, subfolder="scheduler", **kw), "unet"
            except OSError:  # ... or the flat layout of the original google/ddpm-* repos
                sched, sub = DDPMScheduler.load_config(src, **kw), None
            unet = UNet2DModel.from_pretrained(src, subfolder=sub, torch_dtype=dtype, low_cpu_mem_usage=False, **kw)
            return unet, dict(sched)

        return cls._from(model_id_or_path, load, device, dtype, local_files_only)

    @classmethod
    def tiny_random(cls, seed: int = 0, image_size: int = 8, channels: int = 3) -> "DDPMBackend":
        """Random weights, a miniature pixel DDPM (channels x image_size^2), no hub."""
        from diffusers import UNet2DModel
        torch.manual_seed(seed)
        unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels, norm_num_groups=4, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        # The schedule of Ho et al.'s CIFAR-10 model as google/ddpm-cifar10-32 ships it.
        sched = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
                 "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": True, "variance_type": "fixed_large"}
        return cls(unet, sched, name=f"tiny-random-ddpm-{seed}")

    def save_pretrained(self, folder) -> Path:
        return self._save(folder, "DDPMPipeline", {"unet": ["diffusers", "UNet2DModel"]})

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is an unconditional DDPM without a text encoder")

    encode_prompts = encode

    def eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if self.unet.config.num_class_embeds is None and emb is not None:
            raise ValueError(f"{self.name} is unconditional; pass emb=None (sample with cond=None, uncond=None)")
        out = self.unet(x.to(self.unet.dtype), t, class_labels=emb, return_dict=False)[0]
        return _eps_from_output(out.to(x.dtype), x, t, self.prediction_type, self._alphas_cumprod)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1) / 2).clamp(0, 1)

    def scheduler(self, kind: str = "ddim", **overrides):
        """The repo's own schedule and settings (e.g. clip_sample=True for google/ddpm-*), as DDIM or DDPM."""
        return self._make_scheduler(kind, {}, overrides)
