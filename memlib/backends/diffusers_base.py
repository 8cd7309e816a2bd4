"""What the diffusers-backed backends share: shapes, scheduler config, saving, device, noise-prediction
conversion, and ``from_pretrained``'s offline-first loading (``memlib.backends.hub``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .hub import load_offline_first

class DiffusersBackend:
    """What both backends share: shapes, scheduler config, saving, device, noise-prediction conversion."""

    def __init__(self, unet, scheduler_config: dict, name: str = "ddpm"):
        from diffusers import DDPMScheduler
        # Frozen: gradients are only ever taken w.r.t. inputs (x_t for AMG, the embedding e for Wen).
        self.unet, self.name = unet.eval().requires_grad_(False), name
        size = unet.config.sample_size
        self.sample_shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
        self.scheduler_config = dict(scheduler_config)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self._alphas_cumprod = DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod

    def _make_scheduler(self, kind: str, forced: dict, overrides: dict):
        from diffusers import DDIMScheduler, DDPMScheduler
        classes = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}
        if kind not in classes:
            raise ValueError(f"unknown scheduler kind {kind!r}; choose 'ddim' or 'ddpm'")
        # eps() always returns noise, whatever the checkpoint predicts.
        # from_config ignores keys the class lacks (set_alpha_to_one for DDPM, skip_prk_steps from PNDM configs).
        return classes[kind].from_config({**self.scheduler_config, **forced, "prediction_type": "epsilon", **overrides})

    def _save(self, folder, pipeline: str, components: dict[str, tuple[str, str]]) -> Path:
        import diffusers
        folder = Path(folder)
        for sub in components:  # the tokenizer wrapper saves the transformers tokenizer inside
            getattr(getattr(self, sub), "hf", getattr(self, sub)).save_pretrained(folder / sub)
        (folder / "scheduler").mkdir(parents=True, exist_ok=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
        index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__, **components,
                 "scheduler": ["diffusers", self.scheduler_config.get("_class_name", "DDPMScheduler")]}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        return folder

    @classmethod
    def _from(cls, model_id, load: Callable[[str, bool], tuple], device, dtype, local_files_only):
        if torch.device(device).type == "cpu" and dtype == torch.float16:
            raise ValueError("dtype=torch.float16 on CPU is refused: CPU half-precision kernels are missing or very "
                             "slow (by torch build); use dtype=torch.float32 on CPU, or device='cuda' for fp16")
        return cls(*load_offline_first(str(model_id), load, local_files_only), name=str(model_id)).to(device)

    def to(self, device):
        for sub in self._parts:
            getattr(self, sub).to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device
