"""Tiny testbed diffusion models built from diffusers / transformers configs.

- ``TextToImageModel``: a pixel-space ``UNet2DConditionModel`` conditioned on a small transformers
  ``CLIPTextModel``, trained with classifier-free-guidance dropout (Ho & Salimans 2022). By default the text
  encoder is pretrained and frozen, as Stable Diffusion's is: it is the testbed CLIP's text tower
  (``memlib.testbed.text_tower``); ``text_pretrain_steps = 0`` trains it jointly with the UNet instead.
- ``make_unconditional_unet``: a ``UNet2DModel`` for the DDPM experiments (AMG Sec. 6, IET-AGC+).
- Both use Stable Diffusion v1's noise schedule (``memlib.schedule``).

The testbed UNet predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022; as Stable Diffusion 2.x)
and ``eps()`` converts it to the noise prediction every sampler and metric uses. Why: the eps loss weights the
x0 error at step t by abar / (1 - abar), about 0.005 at t = 981, so a 25-minute CPU run leaves the high-noise
regime unlearned (measured on an eps-trained testbed: the model's conditional shift of x0_hat at t = 981 had
cosine 0.25 with the ideal one, and first-step detection reached AUC 0.86); the v loss weights it by
1 / (1 - abar) instead, as a long-trained model such as Stable Diffusion effectively has learned it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config, ConfigError, check_range
from ..schedule import PREDICTION_TYPES, eps_from_output, sd_scheduler
from ..tokenizer import ClipBPETokenizer


@dataclass
class TextToImageConfig(Config):
    image_size: int = 16                 # pixels per side
    channels: int = 3
    block_out_channels: tuple = (32, 64, 64)  # UNet widths at 16, 8, 4 px
    layers_per_block: int = 1
    attention_head_dim: int = 8
    cross_attention_dim: int = 64        # = text width
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256         # text MLP width (4 x width, as the CLIP text tower it is loaded from)
    context_length: int = 20             # tokens incl. BOS/EOS; testbed captions need <= 14
    text_pretrain_steps: int = 1500      # >0: frozen text tower of a testbed CLIP trained this many steps (as SD's
                                         # frozen CLIP); 0: text encoder trained jointly with the UNet
    prediction_type: str = "v_prediction"  # UNet target; eps() always returns noise (see module docstring)

    def validate(self) -> None:
        check_range("image_size", self.image_size, 8, 512)
        check_range("context_length", self.context_length, 3, 77)
        check_range("text_pretrain_steps", self.text_pretrain_steps, 0)
        if self.cross_attention_dim % self.text_heads:
            raise ConfigError(f"parameter 'cross_attention_dim' = {self.cross_attention_dim} must be divisible "
                             f"by 'text_heads' = {self.text_heads}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"parameter 'prediction_type' = {self.prediction_type!r}; choose one of "
                              f"{PREDICTION_TYPES}")
        if len(self.block_out_channels) < 2:
            raise ConfigError("parameter 'block_out_channels' needs at least 2 levels, e.g. (32, 64, 64)")


class TextToImageModel(nn.Module):
    """UNet + text encoder; ``eps(x, t, emb)`` predicts noise, ``encode(ids)`` gives the text embedding e,
    ``raw(x, t, emb)`` is the UNet's own output (trained against ``training_target``)."""

    def __init__(self, cfg: TextToImageConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        self.cfg = cfg
        n = len(cfg.block_out_channels)
        # Cross-attention only below full resolution: at 16x16 it triples the step time for no gain.
        down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
        up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            down_block_types=down, up_block_types=up, cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.attention_head_dim, norm_num_groups=8)
        self.text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=ClipBPETokenizer.vocab_size, hidden_size=cfg.cross_attention_dim,
            intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.context_length, hidden_act="gelu",
            bos_token_id=ClipBPETokenizer.bos_token_id, eos_token_id=ClipBPETokenizer.eos_token_id,
            pad_token_id=ClipBPETokenizer.pad_token_id))
        if cfg.text_pretrain_steps:  # weights come from the testbed CLIP (memlib.testbed.load_or_train)
            self.text_encoder.requires_grad_(False)
        self.tokenizer = ClipBPETokenizer(cfg.context_length)
        self.register_buffer("alphas_cumprod", sd_scheduler("ddpm").alphas_cumprod.float(), persistent=False)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=ids).last_hidden_state

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.encode(self.tokenizer(prompts).to(self.device))

    def raw(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]

    def eps(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return eps_from_output(self.raw(x, t, emb), x, t, self.cfg.prediction_type, self.alphas_cumprod)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


@dataclass
class UnconditionalConfig(Config):
    image_size: int = 8                  # sklearn digits are 8x8
    channels: int = 1
    block_out_channels: tuple = (32, 64)
    layers_per_block: int = 1
    num_class_embeds: int = 0            # >0: class-conditional (label in [0, n), n = "no label" for CFG)

    def validate(self) -> None:
        check_range("image_size", self.image_size, 4, 512)
        check_range("num_class_embeds", self.num_class_embeds, 0)


def make_unconditional_unet(cfg: UnconditionalConfig) -> nn.Module:
    """A small ``UNet2DModel`` (optionally class-conditional) for the DDPM experiments."""
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1), norm_num_groups=8,
        num_class_embeds=(cfg.num_class_embeds + 1) if cfg.num_class_embeds else None)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
