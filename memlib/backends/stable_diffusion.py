"""Stable Diffusion behind the ``Backend`` interface: latent space (diffusers UNet + VAE), a transformers CLIP text
encoder whose last hidden state is the embedding e Wen et al. differentiate (e.g. CompVis/stable-diffusion-v1-4).

``tiny_random()`` builds random-weight models from configs (no hub) and ``save_pretrained`` writes the diffusers
layout, so tests exercise the real loader.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..schedule import SD_SCHEDULE, eps_from_output as _eps_from_output
from ..tokenizer import readable_token, warn_truncated
from .diffusers_base import DiffusersBackend

class HFClipTokenizer:
    """A transformers ``CLIPTokenizer`` with the methods of ``memlib.tokenizer.ClipBPETokenizer``."""

    def __init__(self, tokenizer):
        self.hf, self.vocab_size, n = tokenizer, len(tokenizer), tokenizer.model_max_length
        self.context_length = n if n and n < 10_000 else 77  # an unset max length shows up as 1e30
        # pad is EOS for SD 1.x but "!" (id 0) for SD 2.x: kept as the checkpoint has it.
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)

    def token_ids(self, text: str) -> list[int]:
        # verbose=False: no "indexing errors" warning for long prompts; __call__ truncates and says so itself
        return list(self.hf(text, add_special_tokens=False, verbose=False).input_ids)

    def token_strings(self, text: str) -> list[str]:
        return [readable_token(s) for s in self.hf.convert_ids_to_tokens(self.token_ids(text))]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)

    def n_tokens(self, text: str) -> int:
        return min(len(self.token_ids(text)), self.context_length - 2)

    def __call__(self, prompts: list[str] | str) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for row in (r for r, text in enumerate(prompts) if not isinstance(text, str)):
            raise TypeError(f"prompt {row} is {type(prompts[row]).__name__}, expected str")
        if not prompts:  # transformers raises IndexError on an empty batch
            return torch.empty((0, self.context_length), dtype=torch.long)
        lengths = [len(ids) for ids in self.hf(prompts, add_special_tokens=False, verbose=False).input_ids]
        warn_truncated(prompts, lengths, self.context_length - 2)
        return self.hf(prompts, padding="max_length", max_length=self.context_length, truncation=True,
                       return_tensors="pt").input_ids


def _sd_clip_tokenizer():
    """A transformers CLIPTokenizer with SD v1's ids, built offline from open_clip's merges."""
    from transformers import CLIPTokenizer

    from ..tokenizer import write_hf_tokenizer_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_hf_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


class StableDiffusionBackend(DiffusersBackend):
    """Latent diffusion: x_t are VAE latents of shape ``sample_shape``; ``decode`` returns images in [0, 1]."""

    _parts = ("unet", "vae", "text_encoder")

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, name: str = "stable-diffusion"):
        super().__init__(unet, scheduler_config, name)
        self.vae, self.text_encoder = (m.eval().requires_grad_(False) for m in (vae, text_encoder))
        self.tokenizer = HFClipTokenizer(tokenizer)
        f = 2 ** (len(vae.config.block_out_channels) - 1)  # VAE downsampling factor (8 for SD)
        self.image_shape = (vae.config.out_channels, self.sample_shape[1] * f, self.sample_shape[2] * f)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, device="cpu", dtype=torch.float32, local_files_only=None,
                        revision: str | None = None, variant: str | None = None) -> "StableDiffusionBackend":
        """Load a diffusers SD folder or hub id. ``local_files_only``: True = cache/folder only; None/False = cache
        first, then the hub when reachable and HF_HUB_OFFLINE is unset. ``variant="fp16"`` picks fp16 weights."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        def load(src: str, local: bool):
            kw = dict(local_files_only=local, revision=revision)
            sched = DDIMScheduler.load_config(src, subfolder="scheduler", **kw)  # small files first: fail fast
            te = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", dtype=dtype, variant=variant, **kw)
            tok = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
            if len(tok) != te.config.vocab_size:
                # transformers 5 returns a 3-token placeholder instead of failing when tokenizer files are absent.
                raise OSError(f"no tokenizer files under {src}/tokenizer")
            mkw = dict(torch_dtype=dtype, variant=variant, low_cpu_mem_usage=False, **kw)
            unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", **mkw)
            vae = AutoencoderKL.from_pretrained(src, subfolder="vae", **mkw)
            return unet, vae, te, tok, dict(sched)

        return cls._from(model_id_or_path, load, device, dtype, local_files_only)

    @classmethod
    def tiny_random(cls, seed: int = 0, latent_size: int = 8) -> "StableDiffusionBackend":
        """Random weights, SD v1 architecture in miniature (latents 4 x s x s, images 3 x 8s x 8s), no hub."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=latent_size, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=16, attention_head_dim=4,
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4)
        vae = AutoencoderKL(  # 4 blocks = 3 downsamplings = factor 8, as in SD
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * 4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=4, sample_size=latent_size * 8)
        te = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, projection_dim=16, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
        # SD v1.4's scheduler_config.json (a PNDM config; scheduler() converts it to DDIM/DDPM).
        sched = {"_class_name": "PNDMScheduler", **SD_SCHEDULE, "skip_prk_steps": True, "set_alpha_to_one": False,
                 "steps_offset": 1, "clip_sample": False, "trained_betas": None}
        return cls(unet, vae, te, _sd_clip_tokenizer(), sched, name=f"tiny-random-sd-{seed}")

    def save_pretrained(self, folder) -> Path:
        """Write the diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
        return self._save(folder, "StableDiffusionPipeline", {
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]})

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=ids.to(self.device)).last_hidden_state

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        if len(prompts) == 0:
            raise ValueError("the prompt list is empty; give at least one prompt")
        return self.encode(self.tokenizer(list(prompts)))

    def eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        if emb is None:
            raise ValueError("Stable Diffusion needs a text embedding; use encode_prompts(['']) for unconditional")
        out = self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=emb.to(self.unet.dtype), return_dict=False)[0]
        # Back to the caller's dtype, so an fp16 model still samples in float32.
        return _eps_from_output(out.to(x.dtype), x, t, self.prediction_type, self._alphas_cumprod)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        z = x.to(self.vae.dtype) / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        return ((self.vae.decode(z, return_dict=False)[0].float() + 1) / 2).clamp(0, 1)

    def scheduler(self, kind: str = "ddim", **overrides):
        """The repo's schedule with SD's sampling settings (no x0 clipping, alpha_0 not forced to 1)."""
        return self._make_scheduler(kind, {"clip_sample": False, "set_alpha_to_one": False}, overrides)
