"""A small open_clip model trained contrastively on the testbed, for CLIP score, retrieval and Fréchet distance.

Stands in for the reference CLIP models (Wen et al. score alignment with OpenCLIP ViT-g-14; FID uses
Inception): a custom tiny ViT/text-transformer config registered with ``open_clip.add_model_config`` and
created with ``pretrained=None`` (nothing is downloaded), trained with the symmetric InfoNCE loss of
Radford et al. 2021 (Eq. in Fig. 3) on the testbed's images and captions. Batches sample distinct clusters,
so the hundreds of copies of a planted image never appear as each other's negatives.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError, load_or_build
from ..config import Config, ConfigError, check_range
from ..device import module_device, to_host
from ..paths import checkpoints_dir
from .data import TestbedData, run_digest
from ..tokenizer import ClipBPETokenizer
from ..train import TrainConfig, contrastive_losses, train_loop

MODEL_NAME = "memlib-testbed-clip"


@dataclass
class ClipConfig(Config):
    image_size: int = 16
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 3
    text_width: int = 64
    text_layers: int = 2
    embed_dim: int = 64
    context_length: int = 20
    steps: int = 1500              # contrastive training steps
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 2)
        if self.image_size % self.patch_size:
            raise ConfigError(f"parameter 'image_size' = {self.image_size} must be a multiple of 'patch_size'")

    def open_clip_config(self) -> dict:
        return {"embed_dim": self.embed_dim,
                "vision_cfg": {"image_size": self.image_size, "layers": self.vision_layers,
                               "width": self.vision_width, "patch_size": self.patch_size, "head_width": 32},
                "text_cfg": {"context_length": self.context_length, "vocab_size": ClipBPETokenizer.vocab_size,
                             "width": self.text_width, "heads": 4, "layers": self.text_layers}}


def make_clip(cfg: ClipConfig) -> torch.nn.Module:
    """Register the custom config with open_clip and create it without pretrained weights (open_clip's warning
    that the model is "initialized randomly" is dropped: the caller loads memlib's checkpoint or trains it)."""
    import open_clip

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{MODEL_NAME}.json"
        path.write_text(json.dumps(cfg.open_clip_config()))
        open_clip.add_model_config(path)
    root = logging.getLogger()
    root.addFilter(_no_random_init_warning)
    try:
        return open_clip.create_model(MODEL_NAME, pretrained=None)
    finally:
        root.removeFilter(_no_random_init_warning)


def _no_random_init_warning(record: logging.LogRecord) -> bool:
    return "initialized randomly" not in record.getMessage()


class ClipScorer:
    """CLIP score (cosine of image and text embeddings) and caption retrieval with a trained testbed CLIP."""

    def __init__(self, model: torch.nn.Module, cfg: ClipConfig, meta: dict | None = None):
        self.model, self.cfg, self.meta = model.eval(), cfg, meta or {}
        self.tokenizer = ClipBPETokenizer(cfg.context_length)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in [-1, 1], (B, 3, S, S); returns unit-norm embeddings, on the CPU."""
        dev = self.device
        return to_host(F.normalize(torch.cat([self.model.encode_image(c.to(dev)) for c in images.split(512)]).float(),
                                   dim=-1))

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings of ``prompts``, on the CPU."""
        return to_host(F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(), dim=-1))

    def _features(self, images_or_features: torch.Tensor) -> torch.Tensor:
        """Accept images (B, 3, S, S) or already computed image features (B, D), to encode only once."""
        x = images_or_features
        return x if x.ndim == 2 else self.image_features(x)

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        """Per-pair cosine similarity between image i and prompt i (images or their features)."""
        return (self._features(images) * self.text_features(prompts)).sum(-1).numpy()

    def retrieve(self, images: torch.Tensor, vocabulary: list[str]) -> list[str]:
        """The best-matching caption of ``vocabulary`` for each image (images or their features)."""
        sims = self._features(images) @ self.text_features(vocabulary).T
        return [vocabulary[i] for i in sims.argmax(1).tolist()]


def _clip_loss(model, data: TestbedData, ids: torch.Tensor):
    clusters = np.unique(data.cluster)
    rows_of = {c: np.flatnonzero(data.cluster == c) for c in clusters}

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        rows = []
        for c in clusters[idx.numpy()]:
            r = rows_of[c]
            rows.append(int(r[int(torch.randint(len(r), (1,), generator=gen))]))
        rows = torch.tensor(rows)
        dev = module_device(model)   # rows are drawn on the CPU; the batch moves to the model
        img = F.normalize(model.encode_image(data.images[rows].to(dev)), dim=-1)
        txt = F.normalize(model.encode_text(ids[rows].to(dev)), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        return contrastive_losses(logits)

    return loss_fn, len(clusters)


def clip_folder(cfg: ClipConfig, data_cfg) -> Path:
    """Where the testbed CLIP of ``cfg`` trained on the data of ``data_cfg`` is checkpointed."""
    return checkpoints_dir() / f"clip-{run_digest(cfg, data_cfg)}"


def load_or_train_clip(data: TestbedData, cfg: ClipConfig | None = None, data_fingerprint: str = "",
                       progress: bool = True, device: torch.device | str | None = None) -> ClipScorer:
    """Load the testbed CLIP for ``data`` (by fingerprint) and ``cfg``, else train it (resumable); it trains and
    runs on ``device`` (default: the CPU)."""
    cfg = cfg or ClipConfig()
    model = make_clip(cfg)
    folder = clip_folder(cfg, data.config)
    meta = {"run": {"clip": cfg.to_dict(), "data": data.config.to_dict()}, "kind": "testbed-clip",
            "data_fingerprint": data_fingerprint}
    meta = json.loads(json.dumps(meta, default=list))

    def train():
        tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=min(100, cfg.steps),
                           cond_dropout=0.0, checkpoint_every=max(1, cfg.steps // 3), seed=cfg.seed)
        loss_fn, n = _clip_loss(model, data, ClipBPETokenizer(cfg.context_length)(data.captions))
        train_loop(model, loss_fn, n, tcfg, folder, meta, progress=progress, device=device)

    def is_finished(m: dict) -> bool:
        if m.get("data_fingerprint") != data_fingerprint:
            raise CheckpointError(f"testbed CLIP {folder} was trained on other data")
        return m.get("step") == cfg.steps

    m, _ = load_or_build(folder, model, is_finished, train)
    if device is not None:
        model.to(device)
    return ClipScorer(model.eval(), cfg, m)
