"""Pretrained models behind the ``Backend`` interface: ``StableDiffusionBackend`` (latent space: diffusers UNet +
VAE, transformers CLIP text encoder, e.g. CompVis/stable-diffusion-v1-4, Wen et al.'s model; ``encode`` gives the
text encoder's last hidden state, the e Wen differentiates), ``DDPMBackend`` (pixel ``UNet2DModel``, e.g.
google/ddpm-cifar10-32) and ``load_backend`` choosing between them.

Loading never hangs offline: cache first, the hub only if HF_HUB_OFFLINE is unset and a <= 3 s probe reaches it;
else ``ModelUnavailableError`` says how to make the model available. ``tiny_random()`` builds random-weight models
from configs (no hub) and ``save_pretrained`` writes the diffusers layout, so tests exercise the real loader.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Callable

import torch

from .models import SD_SCHEDULE, eps_from_output as _eps_from_output

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelUnavailableError(RuntimeError):
    """A model id cannot be loaded here (not cached and the hub is not reachable, or an incomplete folder)."""

    def __init__(self, model_id: str, reason: str):
        self.model_id = model_id
        super().__init__(
            f"model {model_id!r} is not available: {reason}. To make it available offline, either (a) on a machine "
            f"with network access run `hf download {model_id}` (older: `huggingface-cli download {model_id}`), copy "
            f"its Hugging Face cache (~/.cache/huggingface) here and set HF_HOME to it; or (b) pass the path of a "
            f"folder written by `save_pretrained` (diffusers layout: unet/, scheduler/ and for SD vae/, text_encoder/, "
            f"tokenizer/).")


def _offline_requested() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; tests and notebooks set it later, so read it now.
    from huggingface_hub import constants
    env = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(v in {"1", "ON", "YES", "TRUE"} for v in env)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub (or the HTTPS proxy) within ``timeout`` seconds? A thread bounds
    the wait (getaddrinfo ignores socket timeouts); huggingface_hub would retry a dead host for ~20 s per file."""
    from huggingface_hub import constants
    url = urllib.parse.urlparse(os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe():
        with contextlib.suppress(OSError):
            ok.append(socket.create_connection((host, port), timeout=timeout).close() is None)

    (th := threading.Thread(target=probe, daemon=True)).start()
    th.join(timeout)
    return bool(ok)


def _load_offline_first(model_id: str, load: Callable[[str, bool], object], local_files_only: bool | None):
    """``load(source, local_files_only)`` from a folder, else from the HF cache, else (if allowed) the hub."""
    if (path := Path(model_id).expanduser()).is_dir():
        try:
            return load(str(path), True)
        except OSError as e:  # a missing component file
            raise ModelUnavailableError(model_id, f"the folder is incomplete ({e})") from e
    if not _HUB_ID.match(model_id):
        raise ModelUnavailableError(model_id, "it is neither an existing folder nor a valid hub id")
    try:
        return load(model_id, True)
    except OSError as e:
        cache_error = e
    why = ("local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1" if _offline_requested()
           else None if _hub_reachable() else "the hub cannot be reached (no network)")
    if why:
        raise ModelUnavailableError(model_id, f"it is not in the local Hugging Face cache and {why}") from cache_error
    try:
        return load(model_id, False)
    except OSError as e:
        raise ModelUnavailableError(model_id, f"loading from the hub failed ({e})") from e


class _DiffusersBackend:
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
        return cls(*_load_offline_first(str(model_id), load, local_files_only), name=str(model_id)).to(device)

    def to(self, device):
        for sub in self._parts:
            getattr(self, sub).to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device


class HFClipTokenizer:
    """A transformers ``CLIPTokenizer`` with the methods of ``memlib.text.ClipBPETokenizer``."""

    def __init__(self, tokenizer):
        self.hf, self.vocab_size, n = tokenizer, len(tokenizer), tokenizer.model_max_length
        self.context_length = n if n and n < 10_000 else 77  # an unset max length shows up as 1e30
        # pad is EOS for SD 1.x but "!" (id 0) for SD 2.x: kept as the checkpoint has it.
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)

    def token_ids(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False).input_ids)

    def token_strings(self, text: str) -> list[str]:
        return [s.replace("</w>", "") for s in self.hf.convert_ids_to_tokens(self.token_ids(text))]

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
        return self.hf(prompts, padding="max_length", max_length=self.context_length, truncation=True,
                       return_tensors="pt").input_ids


def _sd_clip_tokenizer():
    """A transformers CLIPTokenizer with SD v1's ids, built offline from open_clip's merges."""
    from transformers import CLIPTokenizer

    from .text import write_hf_tokenizer_files
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_hf_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


class StableDiffusionBackend(_DiffusersBackend):
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


class DDPMBackend(_DiffusersBackend):
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


def _model_kind(src: str, local: bool) -> str:
    if Path(src).is_dir():
        return "sd" if (Path(src) / "text_encoder").is_dir() else "ddpm"
    from huggingface_hub import hf_hub_download
    index = json.loads(Path(hf_hub_download(src, "model_index.json", local_files_only=local)).read_text())
    return "sd" if "text_encoder" in index else "ddpm"


def load_backend(name_or_id: str, kind: str | None = None, **kw):
    """A ``StableDiffusionBackend`` or ``DDPMBackend`` for a folder or hub id (keywords go to ``from_pretrained``);
    ``kind`` = 'sd' | 'ddpm' skips detection (a text_encoder in the folder / model_index.json means SD)."""
    if name_or_id == "testbed":
        raise ValueError("'testbed' is loaded by memlib.testbed.load_testbed (wrap it in backend.TestbedBackend)")
    kind = kind or _load_offline_first(str(name_or_id), _model_kind, kw.get("local_files_only"))
    classes = {"sd": StableDiffusionBackend, "stable-diffusion": StableDiffusionBackend, "ddpm": DDPMBackend}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}; choose 'sd' or 'ddpm'")
    return classes[kind].from_pretrained(name_or_id, **kw)
