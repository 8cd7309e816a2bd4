"""The DDPM testbed: scikit-learn's 1,797 real 8x8 handwritten digits with planted duplicates.

Our CIFAR-10 stand-in for the unconditional and class-conditional DDPM experiments (AMG Sec. 6 on CIFAR-10;
IET-AGC+). A random ``heldout_fraction`` of the digits is never trained on: it is the Fréchet reference (a model
that copies its training set is not rewarded). Of the training digits, ``n_duplicated`` are repeated ``copies``
times each (ground truth: ``duplicated``), the way Somepalli et al. (2023) and Gu et al. (TMLR 2025) plant
duplicates to make memorization measurable.
Models are ``memlib.testbed.model.make_unconditional_unet`` (a diffusers ``UNet2DModel``), trained with the same
resumable loop as the text-to-image testbed; a class label of ``n_classes`` means "no label" (CFG dropout).
The loss is per sample with its timesteps, so IET-AGC's proxy models (Liu et al. 2024: one shard of rows each,
a per-timestep loss bank skipping low-loss samples) train through ``train_digits_model(..., rows=, sample_hook=)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, check_range
from ..schedule import add_noise, sd_scheduler
from .model import UnconditionalConfig, make_unconditional_unet
from ..train import Losses, TrainConfig, mse_losses, train_loop


@dataclass
class DigitsDataConfig(Config):
    seed: int = 0               # which digits get duplicated
    n_duplicated: int = 20      # digits planted as duplicates ...
    copies: int = 30            # ... each this many times in total
    max_images: int = 0         # keep only the first N real digits (0: all 1,797)
    heldout_fraction: float = 0.15  # digits never trained on (the Fréchet reference), drawn at random

    def validate(self) -> None:
        check_range("heldout_fraction", self.heldout_fraction, 0.0, 0.9)
        check_range("n_duplicated", self.n_duplicated, 0)
        check_range("copies", self.copies, 1)
        check_range("max_images", self.max_images, 0)


@dataclass
class DigitsData:
    images: torch.Tensor        # (N, 1, 8, 8) in [-1, 1]
    labels: torch.Tensor        # (N,) digit class 0..9
    cluster: np.ndarray         # (N,) source digit index; copies share it
    duplicated: np.ndarray      # (N,) bool: row belongs to a planted duplicate
    config: DigitsDataConfig
    heldout_images: torch.Tensor = None   # (M, 1, 8, 8) real digits never trained on
    heldout_labels: torch.Tensor = None   # (M,)


def make_digits_data(cfg: DigitsDataConfig | None = None) -> DigitsData:
    from sklearn.datasets import load_digits

    cfg = cfg or DigitsDataConfig()
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0 * 2 - 1)[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    if cfg.max_images:
        x, y = x[: cfg.max_images], y[: cfg.max_images]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(x))
    n_held = int(round(cfg.heldout_fraction * len(x)))
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    if cfg.n_duplicated > len(train):
        raise ValueError(f"parameter 'n_duplicated' = {cfg.n_duplicated} exceeds the {len(train)} training "
                         "digits available")
    dup = rng.choice(train, size=cfg.n_duplicated, replace=False)
    extra = np.repeat(dup, cfg.copies - 1)   # each planted digit ends with `copies` rows in total
    rows = np.concatenate([train, extra])
    duplicated = np.isin(rows, dup)
    return DigitsData(x[rows], y[rows], rows, duplicated, cfg, x[held], y[held])


def _eps_losses(unet, x0, t, noise, abar, labels=None) -> Losses:
    dev = next(unet.parameters()).device
    x0, t, noise, a = x0.to(dev), t.to(dev), noise.to(dev), abar[t].view(-1, 1, 1, 1).to(dev)
    xt = add_noise(x0, noise, a)
    pred = unet(xt, t, class_labels=None if labels is None else labels.to(dev), return_dict=False)[0]
    return mse_losses(pred, noise, t, {"x_t": xt, "pred": pred})


def digits_loss(unet, data: DigitsData, n_classes: int, label_dropout: float = 0.1):
    """Epsilon-prediction loss (Ho et al. 2020, Eq. 14) per sample, with its timesteps (``memlib.train.Losses``);
    class-conditional models drop labels to ``n_classes`` (the null label). Random draws stay on the CPU in a
    fixed order; the batch then moves to the UNet's device."""
    abar = sd_scheduler("ddpm").alphas_cumprod.float()

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> Losses:
        x0 = data.images[idx]
        t = torch.randint(0, len(abar), (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        labels = None
        if n_classes:
            labels = data.labels[idx].clone()
            labels[torch.rand(len(idx), generator=gen) < label_dropout] = n_classes
        return _eps_losses(unet, x0, t, noise, abar, labels)

    return loss_fn


def image_loss(unet):
    """The same loss on given (e.g. augmented) images of an unconditional model, fresh t and noise from ``gen``:
    IET-AGC+'s extra step."""
    abar = sd_scheduler("ddpm").alphas_cumprod.float()

    def loss_on(x0: torch.Tensor, gen: torch.Generator) -> Losses:
        t = torch.randint(0, len(abar), (len(x0),), generator=gen)
        return _eps_losses(unet, x0, t, torch.randn(x0.shape, generator=gen), abar)

    return loss_on


def train_digits_model(data: DigitsData, model_cfg: UnconditionalConfig, train_cfg: TrainConfig,
                       folder: str | Path, progress: bool = True, stop_at: int | None = None, unet=None,
                       **loop_options):
    """Train (or resume) a digits DDPM in ``folder``; returns (unet, training state). ``loop_options`` go to
    ``memlib.train.train_loop``: ``rows`` (a shard), ``device``, ``sample_hook``, ``loss_state``, ..."""
    import json

    if unet is None:
        torch.manual_seed(train_cfg.seed)
        unet = make_unconditional_unet(model_cfg)
    meta = {"kind": "digits-ddpm", "run": json.loads(json.dumps(
        {"data": data.config.to_dict(), "model": model_cfg.to_dict(), "train": train_cfg.to_dict()}, default=list))}
    loss_fn = digits_loss(unet, data, model_cfg.num_class_embeds)
    state = train_loop(unet, loss_fn, len(data.images), train_cfg, folder, meta, progress=progress,
                       stop_at=stop_at, **loop_options)
    return unet, state


def load_digits_model(class_conditional: bool = False, data_cfg: DigitsDataConfig | None = None,
                      model_cfg: UnconditionalConfig | None = None, train_cfg: TrainConfig | None = None,
                      retrain: bool = False, progress: bool = True):
    """(unet, n_classes, meta): the digits DDPM for these settings from ``checkpoints/digits-<digest>/``, else
    trained there (resumable; a corrupt checkpoint is set aside and rebuilt)."""
    from ..checkpoint import load_or_build
    from ..paths import checkpoints_dir
    from .data import run_digest

    data_cfg = data_cfg or DigitsDataConfig()
    model_cfg = model_cfg or UnconditionalConfig(num_class_embeds=10 if class_conditional else 0)
    train_cfg = train_cfg or TrainConfig(steps=3000, batch_size=128, lr=1e-3)
    folder = checkpoints_dir() / f"digits-{run_digest(data_cfg, model_cfg, train_cfg)}"
    data = make_digits_data(data_cfg)
    torch.manual_seed(train_cfg.seed)
    unet = make_unconditional_unet(model_cfg)
    meta, _ = load_or_build(folder, unet, lambda m: m.get("step") == train_cfg.steps,
                            lambda: train_digits_model(data, model_cfg, train_cfg, folder, progress, unet=unet),
                            retrain)
    return unet.eval(), model_cfg.num_class_embeds, dict(meta, folder=folder.name)
