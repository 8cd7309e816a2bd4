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
    x0 = data.images[rows]
    noise = torch.randn((n_noise, *x0.shape[1:]), generator=gen)
    abar = sd_scheduler("ddpm").alphas_cumprod.float()
    dev = next(unet.parameters()).device
    out = {}
    for t in timesteps:
        losses = torch.zeros(len(rows))
        for e in noise:
            xt = add_noise(x0, e.expand_as(x0), abar[t].view(1, 1, 1, 1))
            tt = torch.full((len(rows),), t)
            labels = torch.full((len(rows),), unet.config.num_class_embeds - 1) \
                if getattr(unet.config, "num_class_embeds", None) else None   # the null label
            pred = unet(xt.to(dev), tt.to(dev), class_labels=None if labels is None else labels.to(dev),
                        return_dict=False)[0].cpu()
            losses += ((pred - e) ** 2).flatten(1).mean(1) / len(noise)
        lp, lo = losses[:len(planted)].numpy(), losses[len(planted):].numpy()
        out[int(t)] = {"planted_mean": float(lp.mean()), "ordinary_mean": float(lo.mean()),
                       "ratio": float(lp.mean() / lo.mean()), "auc_planted_lower": auc_and_tpr(-lp, -lo)[0]}
    return {"per_timestep": out, "n_planted": int(len(planted)), "n_ordinary": int(len(ordinary)),
            "n_noise": n_noise}
