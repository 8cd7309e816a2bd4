"""AGC's premise (Liu et al., ECCV 2024, Sec. 3.3: "easily memorized images have clearly lower loss"), checked on
a trained digits DDPM: at fixed timesteps, the denoising loss of planted duplicates against ordinary training
digits, each averaged over the same noises; the AUC scores lower loss as "planted"."""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import auc_and_tpr
from ..schedule import add_noise, sd_scheduler

TIMESTEPS = (50, 150, 250, 400, 550, 700, 850, 950)


@torch.no_grad()
def loss_premise(unet, data, timesteps=TIMESTEPS, n_ordinary: int = 256, n_noise: int = 8, seed: int = 0) -> dict:
    """Per timestep: mean loss of one row per planted digit and of ``n_ordinary`` ordinary rows, their ratio and
    the AUC (planted lower), each row's loss averaged over ``n_noise`` noises shared by all rows."""
    gen = torch.Generator().manual_seed(seed)
    planted = np.unique(data.cluster[data.duplicated], return_index=True)[1]
    planted = np.flatnonzero(data.duplicated)[planted] if len(planted) else planted
    ordinary = np.flatnonzero(~data.duplicated)
    ordinary = ordinary[torch.randperm(len(ordinary), generator=gen)[:n_ordinary].numpy()]
    if not len(planted) or not len(ordinary):
        raise ValueError("the premise needs planted and ordinary training rows")
    rows = np.concatenate([planted, ordinary])
    losses = _row_losses(unet, data.images[rows], timesteps, n_noise, gen)
    out = {}
    for t, loss in losses.items():
        lp, lo = loss[:len(planted)], loss[len(planted):]
        out[int(t)] = {"planted_mean": float(lp.mean()), "ordinary_mean": float(lo.mean()),
                       "ratio": float(lp.mean() / lo.mean()), "auc_planted_lower": auc_and_tpr(-lp, -lo)[0]}
    return {"per_timestep": out, "n_planted": int(len(planted)), "n_ordinary": int(len(ordinary)),
            "n_noise": n_noise}


@torch.no_grad()
def _row_losses(unet, x0: torch.Tensor, timesteps, n_noise: int, gen: torch.Generator) -> dict[int, np.ndarray]:
    """Each row's loss at each timestep, averaged over ``n_noise`` noises shared by all rows."""
    noise = torch.randn((n_noise, *x0.shape[1:]), generator=gen)
    abar = sd_scheduler("ddpm").alphas_cumprod.float()
    dev = next(unet.parameters()).device
    labels = torch.full((len(x0),), unet.config.num_class_embeds - 1) \
        if getattr(unet.config, "num_class_embeds", None) else None   # the null label
    out = {}
    for t in timesteps:
        losses = torch.zeros(len(x0))
        for e in noise:
            xt = add_noise(x0, e.expand_as(x0), abar[t].view(1, 1, 1, 1))
            tt = torch.full((len(x0),), t)
            pred = unet(xt.to(dev), tt.to(dev), class_labels=None if labels is None else labels.to(dev),
                        return_dict=False)[0].cpu()
            losses += ((pred - e) ** 2).flatten(1).mean(1) / len(noise)
        out[int(t)] = losses.numpy()
    return out


def row_losses(unet, data, timesteps=(50, 250, 550, 850), n_noise: int = 4, seed: int = 0) -> dict:
    """Per-row losses of one row per planted digit and of every ordinary training row, at each timestep: the
    distribution AGC's skip threshold cuts."""
    planted = np.flatnonzero(data.duplicated)[np.unique(data.cluster[data.duplicated], return_index=True)[1]]
    ordinary = np.flatnonzero(~data.duplicated)
    losses = _row_losses(unet, data.images[np.concatenate([planted, ordinary])], timesteps, n_noise,
                         torch.Generator().manual_seed(seed))
    return {int(t): {"planted": [round(float(v), 5) for v in loss[:len(planted)]],
                     "ordinary": [round(float(v), 5) for v in loss[len(planted):]]} for t, loss in losses.items()}
