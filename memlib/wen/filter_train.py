"""Wen et al.'s training-time mitigation (Wen, Liu, Chen, Lyu, ICLR 2024, Sec. 4.2; reference code
``train_text_to_image.py --hard_threshold``): at every training step, one extra no-grad pass gives each sample's
text-conditional magnitude m_i = || eps(x_t, e_p) - eps(x_t, e_empty) ||_2 at its own (x_t, t), and samples with
m_i >= tau are dropped from the loss. A step whose batch is dropped entirely updates nothing (zero gradient; the
learning-rate schedule still advances). Samples trained on the empty prompt (CFG dropout) have m_i = 0.

- ``magnitude_probe``: before training anything, does the magnitude separate planted from ordinary rows at a
  fixed t on a trained model (AUC per timestep)? A fixed tau can only act where it does.
- ``tau_from_percentiles``: thresholds from the magnitudes of ordinary rows at uniform random t.
- ``train_filtered``: the testbed's training run with the filter; same data, seed and batch order as the
  unfiltered run, so the two differ only by the filter.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import file_lock
from ..checkpoint import CheckpointError, load_or_build
from ..metrics import roc
from ..paths import checkpoints_dir
from ..schedule import add_noise, eps_from_output
from ..testbed.build import Testbed, TestbedRef, data_fingerprint, load_or_train
from ..testbed.data import run_digest
from ..testbed.model import TextToImageModel
from ..train import Batch, text_to_image_loss, train_loop

PLANTED_ROWS = ("verbatim", "verbatim_knob", "image_dup", "caption_dup")
ORDINARY_ROWS = ("generic",)
PROBE_TIMESTEPS = (50, 150, 250, 400, 550, 700, 850, 950)


@torch.no_grad()
def row_magnitudes(model: TextToImageModel, images: torch.Tensor, ids: torch.Tensor, t: torch.Tensor,
                   seed: int, batch: int = 256) -> np.ndarray:
    """m_i for training rows (images, token ids) noised at timesteps t with noise from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen)
    dev = model.device
    empty = model.encode(model.tokenizer([""]).to(dev))
    abar = model.alphas_cumprod.cpu()
    out = []
    for s in range(0, len(images), batch):
        x0, n, tt = images[s:s + batch], noise[s:s + batch], t[s:s + batch]
        xt = add_noise(x0, n, abar[tt].view(-1, 1, 1, 1)).to(dev)   # noised on the CPU: the same on any device
        tt = tt.to(dev)
        e_c = model.eps(xt, tt, model.encode(ids[s:s + batch].to(dev)))
        e_u = model.eps(xt, tt, empty.expand(len(xt), -1, -1))
        out.append((e_c - e_u).flatten(1).norm(dim=1).cpu())
    return torch.cat(out).numpy()


def _rows(data, groups: tuple[str, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.flatnonzero(np.isin(data.group, groups))
    return np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))


@dataclass
class ProbeResult:
    timesteps: list[int]
    auc: list[float]                 # planted (positive) against ordinary rows, per timestep
    planted_median: list[float]
    ordinary_median: list[float]
    n_planted: int
    n_ordinary: int


def magnitude_probe(tb: Testbed, n_rows: int = 512, timesteps=PROBE_TIMESTEPS, seed: int = 0) -> ProbeResult:
    """Per-sample magnitude of planted against ordinary training rows at fixed timesteps (one noise each)."""
    rng = np.random.default_rng(seed)
    planted, ordinary = _rows(tb.data, PLANTED_ROWS, n_rows, rng), _rows(tb.data, ORDINARY_ROWS, n_rows, rng)
    rows = np.concatenate([planted, ordinary])
    ids = tb.model.tokenizer([tb.data.captions[i] for i in rows])
    images = tb.data.images[rows]
    aucs, pm, om = [], [], []
    for k, t in enumerate(timesteps):
        m = row_magnitudes(tb.model, images, ids, torch.full((len(rows),), int(t)), seed + k)
        pos, neg = m[:len(planted)], m[len(planted):]
        aucs.append(float(roc(pos, neg).auc))
        pm.append(float(np.median(pos)))
        om.append(float(np.median(neg)))
    return ProbeResult([int(t) for t in timesteps], aucs, pm, om, len(planted), len(ordinary))


def tau_from_percentiles(tb: Testbed, percentiles=(90.0, 99.0, 99.9), n_rows: int = 2048, seed: int = 1
                         ) -> dict[float, float]:
    """tau values at percentiles of ordinary rows' magnitudes, each row at a uniform random t (as in training).
    Always computed on the CPU: a tau names a shipped checkpoint, which another device's rounding must not miss."""
    rng = np.random.default_rng(seed)
    rows = _rows(tb.data, ORDINARY_ROWS, n_rows, rng)
    t = torch.as_tensor(rng.integers(0, 1000, size=len(rows)))
    ids = tb.model.tokenizer([tb.data.captions[i] for i in rows])
    model = tb.model if tb.model.device.type == "cpu" else copy.deepcopy(tb.model).cpu()
    m = row_magnitudes(model, tb.data.images[rows], ids, t, seed)
    # two decimals: the value names the shipped checkpoint, so it must not move with float noise
    return {float(p): round(float(np.percentile(m, p)), 2) for p in percentiles}


class MagnitudeFilter:
    """The sample hook: weight 0 where m_i >= tau. Returns None (the plain mean, bit-identical to unfiltered
    training) when no sample in the batch is dropped. Counts dropped samples per step in ``state['dropped']``."""

    def __init__(self, model: TextToImageModel, tau: float, empty_ids: torch.Tensor):
        self.model, self.tau, self.empty_ids = model, float(tau), empty_ids

    @torch.no_grad()
    def __call__(self, b: Batch) -> torch.Tensor | None:
        info, t = b.losses.info, b.losses.t
        xt, ids = info["x_t"].detach(), info["ids"]
        m = self.model
        e_c = eps_from_output(info["pred"].detach(), xt, t, m.cfg.prediction_type, m.alphas_cumprod)
        e_u = m.eps(xt, t, m.encode(self.empty_ids.to(xt.device).expand(len(xt), -1)))
        mag = (e_c - e_u).flatten(1).norm(dim=1)
        mag[(ids == self.empty_ids.to(ids.device)).all(dim=1)] = 0.0   # trained on "" this step
        drop = mag >= self.tau
        b.state.setdefault("dropped", torch.zeros(0, dtype=torch.long))
        b.state["dropped"] = torch.cat([b.state["dropped"], drop.sum().view(1).cpu()])
        if not bool(drop.any()):
            return None
        return (~drop).float()


def filtered_folder(ref: TestbedRef, tau: float):
    return checkpoints_dir() / f"t2i-wenfilter-{run_digest(ref.data_config(), ref.model_config(), ref.train_config())}" \
                               f"-tau{tau:.4g}"


def train_filtered(ref: TestbedRef, tau: float, retrain: bool = False, progress: bool = True,
                   stop_at: int | None = None, base: Testbed | None = None,
                   device: torch.device | str | None = None) -> Testbed:
    """The testbed UNet trained from scratch as ``ref`` is, with the magnitude filter at ``tau`` (shipped when
    trained with defaults; ``retrain`` redoes it), trained and returned on ``device`` (default: the CPU). Weights
    are stored in float16 (half the size; the unfiltered model is compared after the same rounding,
    ``round_to_float16``)."""
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau = {tau!r}: give a positive, finite magnitude threshold")
    base = base if base is not None else ref.load(progress=progress, device=device)
    data, train_cfg, model_cfg = base.data, ref.train_config(), ref.model_config()
    torch.manual_seed(train_cfg.seed)   # the same initial weights as the unfiltered run
    model = TextToImageModel(model_cfg)
    model.text_encoder.load_state_dict(base.model.text_encoder.state_dict())  # the frozen, shipped encoder
    model.text_encoder.requires_grad_(False)
    folder = filtered_folder(ref, tau)
    run = {"data": ref.data_config().to_dict(), "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
           "wen_filter_tau": float(tau)}
    meta = {"run": json.loads(json.dumps(run, default=list)), "kind": "testbed-text-to-image-wen-filter",
            "data_fingerprint": data_fingerprint(data), "text_encoder_from": base.meta.get("text_encoder_from")}

    def is_finished(m: dict) -> bool:
        if m.get("data_fingerprint") != meta["data_fingerprint"]:
            raise CheckpointError(f"checkpoint {folder} was trained on other data (the data generator changed)")
        return m.get("step") == train_cfg.steps

    def train():
        tok = model.tokenizer
        empty = tok([""])[0]
        loss_fn = text_to_image_loss(model, data.images, tok(data.captions), empty, train_cfg.cond_dropout)
        hook = MagnitudeFilter(model, tau, empty)
        return train_loop(model, loss_fn, len(data), train_cfg, folder, meta, progress=progress, stop_at=stop_at,
                          part="unet", sample_hook=hook, loss_state={}, ship_loss_state=True,
                          ship_dtype=torch.float16, device=device)

    with file_lock(folder.parent / f".{folder.name}.lock"):   # one trainer per folder; others wait, then load
        m, state = load_or_build(folder, model, is_finished, train, retrain)
    if device is not None:
        model.to(device)
    return Testbed(data, model.eval(), folder, m, state)


def round_to_float16(tb: Testbed) -> Testbed:
    """The same model with its UNet weights rounded through float16, as the filtered runs are stored."""
    model = TextToImageModel(tb.model.cfg)
    model.load_state_dict(tb.model.state_dict())
    with torch.no_grad():
        for p in model.unet.parameters():
            p.copy_(p.half().float())
    model.to(tb.model.device)   # rounded on the CPU, then run where the original runs
    return Testbed(tb.data, model.eval(), tb.folder, dict(tb.meta, rounded="float16"), tb.train_state)
