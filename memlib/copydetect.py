"""Copy detection with a learned descriptor, independent of the pixel criteria a mitigation may optimise.

A testbed analogue of SSCD (Pizzi, Dutta Roy, Nagavara Ravindra, Goyal, Douze, "A Self-Supervised Descriptor for
Image Copy Detection", CVPR 2022): a small convolutional network maps an image to an L2-normalised descriptor,
trained self-supervised so that two strongly augmented views of one image match and views of different images do
not (InfoNCE over the batch, as SimCLR, plus SSCD's differential-entropy regulariser, which spreads descriptors
apart). A query copies a reference when the cosine similarity of their descriptors exceeds a threshold
calibrated on negatives (``calibrate_threshold``), as SSCD similarity > 0.5 is read in Somepalli et al. 2023.

Why a second criterion: AMG's dissimilarity guidance (Chen, Liu, Xu, CVPR 2024, Eq. 17) pushes x0_hat away from
its nearest training image in pixel NCC, so a method can lower the pixel Gu ratio (Gu et al., TMLR 2025;
``memlib.metrics``) by adding high-frequency speckle while keeping the copy. The augmentations hold what such
a method can add without changing what the image shows: shifts and crops, colour jitter, Gaussian blur,
Gaussian noise, per-pixel sign (speckle) noise and a pasted patch (a partial edit). ``lowpass_gu_ratio`` is a
parameter-free second opinion: the Gu ratio after a fixed Gaussian low-pass of queries and references.

An evaluation tool: no mitigation may use it (tests/test_architecture.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_weights, read_meta, save_checkpoint
from .config import Config, ConfigError, check_range
from .device import module_device, to_host
from .metrics import NeighbourResult, ReplicationIndex
from .train import Losses, TrainConfig, train_loop

LOWPASS_SIGMA = 1.0        # pixels: ``lowpass_gu_ratio``'s fixed filter
MAX_FALSE_RATE = 0.05      # calibration: at most this share of each negative set is called a copy
KIND = "copy-detector"


@dataclass
class DescriptorConfig(Config):
    channels: int = 3          # 3: the testbed's RGB images; 1: grey digits
    image_size: int = 16       # side in pixels, a multiple of 4
    width: int = 16            # channels of the first convolutions (doubled after the first stride)
    dim: int = 64              # descriptor dimension

    def validate(self) -> None:
        check_range("channels", self.channels, 1, 4)
        check_range("image_size", self.image_size, 4, 64)
        check_range("width", self.width, 4, 256)
        check_range("dim", self.dim, 4, 1024)
        if self.image_size % 4:
            raise ConfigError(f"parameter 'image_size' = {self.image_size} must be a multiple of 4")


class Descriptor(nn.Module):
    """Two stride-2 stages of 3x3 convolutions, then a linear map of the whole (S/4 x S/4) feature map (on
    images this small the layout is the content, so it is kept instead of SSCD's GeM pooling), L2-normalised."""

    def __init__(self, cfg: DescriptorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DescriptorConfig()
        w, s = cfg.width, cfg.image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU())
        self.project = nn.Linear(2 * w * s * s, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"the descriptor takes images of shape (N, {', '.join(map(str, want))}); "
                             f"got {tuple(x.shape)}")
        return F.normalize(self.project(self.features(x).flatten(1)), dim=1)


# -- augmentations ---------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig(Config):
    """Each view is shifted and cropped, then each of the other augmentations acts with probability ``p`` at a
    strength drawn uniformly up to its maximum. Pixel values are in [-1, 1]."""
    max_shift: float = 2.0     # translation per axis, pixels
    min_scale: float = 0.8     # crop: the view spans at least this share of the side, resized back
    brightness: float = 0.15   # added to every pixel, uniform in +-
    contrast: float = 0.2      # contrast factor uniform in 1 +- this
    saturation: float = 0.3    # blend towards the grey of each pixel by up to this (several channels only)
    max_blur: float = 1.2      # Gaussian blur sigma, pixels
    max_noise: float = 0.3     # Gaussian noise standard deviation
    max_speckle: float = 0.5   # sign noise: +-a on every pixel and channel, a up to this
    max_patch: int = 5         # side of a square pasted from another image of the batch
    p: float = 0.5

    def validate(self) -> None:
        check_range("min_scale", self.min_scale, 0.3, 1.0)
        check_range("max_patch", self.max_patch, 0, 64)
        check_range("p", self.p, 0.0, 1.0)
        for name in ("max_shift", "brightness", "contrast", "saturation", "max_blur", "max_noise", "max_speckle"):
            check_range(name, getattr(self, name), 0.0)


def _blur_matrix(sig: torch.Tensor, size: int, dtype) -> torch.Tensor:
    """(N, size, size) matrices applying a 1-D Gaussian of each sigma with the edge pixel repeated."""
    r = max(1, math.ceil(3 * float(sig.max())))
    taps = torch.arange(-r, r + 1)
    k = torch.exp(-taps[None].to(dtype) ** 2 / (2 * sig[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)
    src = (torch.arange(size)[:, None] + taps[None]).clamp(0, size - 1)          # (size, 2r + 1)
    n = len(sig)
    return torch.zeros(n, size, size, dtype=dtype).scatter_add_(
        2, src.expand(n, size, 2 * r + 1), k[:, None, :].expand(n, size, 2 * r + 1))


def gaussian_blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Separable Gaussian blur of images (N, C, H, W) with edge pixels repeated; ``sigma`` in pixels, a number
    or one per image (0 leaves an image as it is)."""
    if len(x) == 0:
        return x
    sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(len(x))
    rows, cols = _blur_matrix(sig, x.shape[2], x.dtype), _blur_matrix(sig, x.shape[3], x.dtype)
    return rows[:, None] @ x @ cols[:, None].transpose(-1, -2)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """One strongly augmented view of each image of ``x`` (N, C, S, S) in [-1, 1]; draws come from ``gen``."""
    n, c, s, _ = x.shape
    scale = _uniform(n, cfg.min_scale, 1.0, gen)
    shift = torch.stack([_uniform(n, -1, 1, gen) * (cfg.max_shift * 2 / s + 1 - scale) for _ in range(2)], 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def on() -> torch.Tensor:   # which images get the next augmentation
        return (torch.rand(n, generator=gen) < cfg.p).float().view(n, 1, 1, 1)

    def col(v: torch.Tensor) -> torch.Tensor:
        return v.view(n, 1, 1, 1)

    mean = x.mean((1, 2, 3), keepdim=True)
    jitter = (x - mean) * col(_uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen)) + mean \
        + col(_uniform(n, -cfg.brightness, cfg.brightness, gen))
    if c > 1:
        jitter = jitter + col(_uniform(n, 0, cfg.saturation, gen)) * (jitter.mean(1, keepdim=True) - jitter)
    x = torch.lerp(x, jitter, on())
    if cfg.max_patch >= 1 and n > 1:   # a partial edit: a square from the previous image of the batch
        side = torch.randint(1, cfg.max_patch + 1, (n,), generator=gen)
        y0, x0 = (torch.randint(0, s, (n,), generator=gen) for _ in range(2))
        ii = torch.arange(s)
        rows = (ii[None] >= y0[:, None]) & (ii[None] < (y0 + side)[:, None])
        cols = (ii[None] >= x0[:, None]) & (ii[None] < (x0 + side)[:, None])
        mask = (rows[:, :, None] & cols[:, None, :])[:, None] & (on() > 0)
        x = torch.where(mask, x.roll(1, 0), x)
    x = torch.lerp(x, gaussian_blur(x, _uniform(n, 0, cfg.max_blur, gen)), on())
    x = x + on() * col(_uniform(n, 0, cfg.max_noise, gen)) * torch.randn(x.shape, generator=gen)
    x = x + on() * col(_uniform(n, 0, cfg.max_speckle, gen)) * torch.randn(x.shape, generator=gen).sign()
    return x.clamp(-1, 1)


# -- training --------------------------------------------------------------------------------------------------

@dataclass
class DescriptorTrainConfig(Config):
    steps: int = 400
    batch_size: int = 128        # images per step (two views each)
    lr: float = 2e-3             # AdamW, linear warm-up then cosine decay (``memlib.train``)
    temperature: float = 0.1     # InfoNCE temperature
    entropy_weight: float = 1.0  # SSCD's differential-entropy (KoLeo) regulariser; 0 turns it off
    checkpoint_every: int = 500
    seed: int = 0

    def validate(self) -> None:
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 2, 4096)
        check_range("temperature", self.temperature, 1e-3, 10.0)
        check_range("entropy_weight", self.entropy_weight, 0.0)

    def loop_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=min(100, self.steps),
                           cond_dropout=0.0, checkpoint_every=min(self.checkpoint_every, self.steps), seed=self.seed)


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, entropy_weight: float) -> Losses:
    """InfoNCE over 2N views (each view's positive is the other view of its image; SimCLR's NT-Xent), per image,
    plus ``entropy_weight`` times SSCD's entropy term -mean log(distance to the nearest other descriptor) within
    each view set."""
    z = torch.cat([z1, z2])
    n = len(z1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    per = F.cross_entropy(logits, target, reduction="none").view(2, n).mean(0)
    total = per.mean()
    if entropy_weight:
        ent = 0.0
        for v in (z1, z2):
            d = torch.cdist(v, v) + torch.eye(n) * 1e3
            ent = ent - torch.log(d.min(1).values + 1e-8).mean() / 2
        total = total + entropy_weight * ent
    return Losses(per, mean=total)


def train_descriptor(images: torch.Tensor, folder: str | Path, descriptor_cfg: DescriptorConfig,
                     train_cfg: DescriptorTrainConfig, augment_cfg: AugmentConfig, meta: dict,
                     progress: bool = True) -> tuple[Descriptor, dict]:
    """Train (or resume, in ``folder``) a descriptor on ``images`` (N, C, S, S) in [-1, 1]; returns it with its
    weights rounded to float16, exactly what a saved detector holds, and the training state."""
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"training a descriptor needs at least 2 images (N, C, S, S); got {tuple(images.shape)}")
    torch.manual_seed(train_cfg.seed)
    model = Descriptor(descriptor_cfg)
    data = images.float()

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> Losses:
        x = data[idx]
        return contrastive_loss(model(augment(x, augment_cfg, gen)), model(augment(x, augment_cfg, gen)),
                                train_cfg.temperature, train_cfg.entropy_weight)

    run = {"descriptor": descriptor_cfg.to_dict(), "train": train_cfg.to_dict(), "augment": augment_cfg.to_dict()}
    state = train_loop(model, loss_fn, len(data), train_cfg.loop_config(), folder, dict(meta, kind=KIND, run=run),
                       progress=progress, ship_dtype=torch.float16)
    load_weights(folder, model)   # the shipped float16 weights: calibration sees what users load
    return model.eval(), state


# -- scoring ---------------------------------------------------------------------------------------------------

def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity matrix (len(a), len(b)) of two sets of vectors."""
    return F.normalize(a.float().flatten(1), dim=1) @ F.normalize(b.float().flatten(1), dim=1).T


def nearest(queries: torch.Tensor, references: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(index, similarity) of each query's most cosine-similar reference (descriptors or any vectors)."""
    if len(references) == 0:
        raise ValueError("nearest needs at least one reference")
    idx, sim = [], []
    for s in range(0, len(queries), chunk):
        best = cosine(queries[s:s + chunk], references).max(1)
        idx.append(best.indices.numpy())
        sim.append(best.values.numpy())
    return (np.concatenate(idx) if idx else np.zeros(0, np.int64)), (np.concatenate(sim) if sim else np.zeros(0))


def calibrate_threshold(*negatives, max_false_rate: float = MAX_FALSE_RATE) -> float:
    """The copy threshold t (a copy is similarity > t) at which at most ``max_false_rate`` of EACH negative set
    is called a copy: per set with n scores, its (k + 1)-th highest score, k = floor(max_false_rate n); the
    largest over the sets."""
    if not negatives or any(len(np.ravel(s)) == 0 for s in negatives):
        raise ValueError("calibrate_threshold needs at least one non-empty set of negative scores")
    if not 0 <= max_false_rate < 1:
        raise ValueError(f"max_false_rate = {max_false_rate}: give a share in [0, 1)")
    out = []
    for s in negatives:
        v = np.sort(np.asarray(s, float).ravel())[::-1]
        out.append(v[int(math.floor(max_false_rate * len(v) + 1e-9))])
    return float(max(out))


def false_copy_rate(scores, threshold: float) -> float:
    """Share of ``scores`` called copies (similarity > threshold)."""
    return float((np.asarray(scores, float) > threshold).mean())


@dataclass
class CopyDetector:
    """A trained descriptor with its calibrated copy threshold and a record of what it was trained and calibrated
    on. ``references`` may be images or their descriptors (``embed``), so a large reference set is embedded once."""
    descriptor: Descriptor
    threshold: float
    trained_on: dict = field(default_factory=dict)
    name: str = ""                 # the checkpoint folder it was loaded from ...
    sha256: str = ""               # ... and its weights' hash

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """Descriptors of ``images``, computed where the descriptor is and returned on the CPU."""
        self.descriptor.eval()
        dev = module_device(self.descriptor)
        parts = [to_host(self.descriptor(images[s:s + batch].to(dev).float())) for s in range(0, len(images), batch)]
        return torch.cat(parts) if parts else torch.zeros(0, self.descriptor.cfg.dim)

    def to(self, device: torch.device | str | None) -> "CopyDetector":
        """Run the descriptor on ``device`` (None: where it is); scores and thresholds are unchanged."""
        if device is not None:
            self.descriptor.to(device)
        return self

    def _descriptors(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() if x.ndim == 2 else self.embed(x)

    def nearest(self, queries: torch.Tensor, references: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(index, cosine similarity) of each query's nearest reference in descriptor space."""
        return nearest(self._descriptors(queries), self._descriptors(references))

    def is_copy(self, queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
        return self.nearest(queries, references)[1] > self.threshold

    def copy_rate(self, queries: torch.Tensor, references: torch.Tensor) -> float:
        return float(self.is_copy(queries, references).mean())

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """float16 weights (``model.safetensors``) and a JSON sidecar (``meta.json``: the descriptor's config, the
        threshold, ``trained_on`` and ``meta``)."""
        body = dict(meta or {}, kind=KIND, descriptor=self.descriptor.cfg.to_dict(), threshold=self.threshold,
                    trained_on=self.trained_on)
        return save_checkpoint(folder, self.descriptor, body, dtype=torch.float16)

    @classmethod
    def load(cls, folder: str | Path) -> "CopyDetector":
        meta = read_meta(folder)
        if meta.get("kind") != KIND or "threshold" not in meta:
            raise CheckpointError(f"{folder} holds no finished copy detector (kind {meta.get('kind')!r}); train one "
                                  f"with `python -m memlib.testbed.copy_detector`")
        descriptor = Descriptor(DescriptorConfig(**meta["descriptor"]))
        load_weights(folder, descriptor)
        return cls(descriptor.eval(), float(meta["threshold"]), meta.get("trained_on", {}), Path(folder).name,
                   meta["sha256"])


def lowpass_gu_ratio(queries: torch.Tensor, references: torch.Tensor, clusters=None) -> NeighbourResult:
    """The Gu ratio d1/d2 (Gu et al., TMLR 2025; ``memlib.metrics.ReplicationIndex``, cluster-aware) of queries
    and references both low-passed by a Gaussian of ``LOWPASS_SIGMA`` pixels: speckle that hides a copy from the
    pixel ratio does not survive the filter."""
    index = ReplicationIndex(gaussian_blur(references.float(), LOWPASS_SIGMA), clusters)
    return index.query(gaussian_blur(queries.float(), LOWPASS_SIGMA))
