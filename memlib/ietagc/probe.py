"""What IET-AGC+'s training jobs record as they go (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434), so
notebook 06 can plot memorization over rounds and AGC's premise during training, not only after it:

- at each finished round (IET) or frontier checkpoint (baseline): unguided 50-step DDIM samples of the current
  model scored by ``memlib.mitigate.digits.DigitsScorer`` (IET-AGC's memorization ratio, Gu replication, planted
  replication, Fréchet distance, and the independent copy detector's rate, nearest-is-planted and the low-pass Gu
  ratio: recorded, never read by the training) and ``premise.loss_premise`` (planted against ordinary rows' loss
  per timestep);
- for IET runs, the proxies' AGC banks (binned; whole at the last round) and where the skips fell: each row's
  skips summed over proxies, split into planted and ordinary rows, and TAA's extra steps and magnitudes.
Probe seeds (``PROBE_SEED``...) are disjoint from the notebook's evaluation seeds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..backends.testbed import DigitsBackend
from ..checkpoint import CheckpointError
from ..mitigate.digits import DigitsScorer
from ..sampling import sample, seeded_rows
from ..schedule import sd_scheduler
from .premise import loss_premise

PROBE_SEED = 300_000
PROBE_TIMESTEPS = (50, 250, 550, 850)
_SCORERS: dict = {}


@torch.no_grad()
def sample_unconditional(unet, seeds, steps: int = 50, batch: int = 500) -> torch.Tensor:
    """Unguided DDIM (eta = 0) samples of an unconditional digits UNet, one per seed, clipped to [-1, 1]."""
    out, seeds = [], list(seeds)
    dev = next(unet.parameters()).device
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    eps = DigitsBackend(unet, 0).eps
    for s in range(0, len(seeds), batch):
        x_T, gens = seeded_rows(shape, seeds[s:s + batch], dev)
        x = sample(eps, x_T, sd_scheduler("ddim"), steps, cond=None, uncond=None, generator=gens)
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, *shape)


class Probe:
    def __init__(self, data, n_samples: int = 256, steps: int = 50, seed: int = 0, n_noise: int = 4):
        self.data, self.n, self.steps, self.n_noise = data, int(n_samples), int(steps), int(n_noise)
        key = (json.dumps(data.config.to_dict(), sort_keys=True), seed)
        if key not in _SCORERS:                 # one classifier per data set in a process (runs in turn)
            _SCORERS[key] = DigitsScorer.for_digits(data, seed=seed)
        self.scorer = _SCORERS[key]
        self.planted = torch.as_tensor(data.duplicated)

    def model(self, unet) -> dict:
        x = sample_unconditional(unet.eval(), range(PROBE_SEED, PROBE_SEED + self.n), self.steps)
        s = self.scorer.score(x)
        out = {k: s[k] for k in ("gu_replication", "planted_replication", "frechet", "copy_rate", "nn_is_planted",
                                 "lowpass_replication")}
        out.update(self.scorer.memorization(x))
        prem = loss_premise(unet, self.data, PROBE_TIMESTEPS, n_ordinary=128, n_noise=self.n_noise)["per_timestep"]
        out["premise"] = {t: {"ratio": round(v["ratio"], 4), "auc": round(v["auc_planted_lower"], 4)}
                          for t, v in prem.items()}
        return out

    def shards(self, stats: dict, last: bool) -> dict:
        bank = stats["bank"].float()
        skips = stats["skips"].sum(0)
        p = self.planted
        out = {"bank_binned": [[round(float(v), 5) for v in b.reshape(20, -1).mean(1)] for b in bank],
               "skips_total": int(skips.sum()),
               "skips_per_planted_row": float(skips[p].mean()) if p.any() else 0.0,
               "skips_per_ordinary_row": float(skips[~p].mean()) if (~p).any() else 0.0,
               "skips_share_planted": float(skips[p].sum() / skips.sum()) if skips.sum() > 0 else 0.0,
               "taa_steps": [int(v) for v in stats["taa_steps"]],
               "taa_mean_magnitude": [float(m / s) if s > 0 else 0.0
                                      for m, s in zip(stats["taa_magnitude_sum"], stats["taa_steps"])]}
        if last:
            out["bank"] = [[round(float(v), 5) for v in b] for b in bank]
        return out


def update_progress(folder: str | Path, key: str, entry: dict) -> None:
    """Add ``entry`` under ``key`` in ``folder/progress.json``, atomically (a resumed run rewrites the same keys)."""
    path = Path(folder) / "progress.json"
    rec = read_progress(folder)
    rec[key] = entry
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1, default=float) + "\n")
    tmp.replace(path)


def read_progress(folder: str | Path) -> dict:
    """What the run in ``folder`` recorded ({} before its first probe); a damaged file is a one-line error."""
    path = Path(folder) / "progress.json"
    if not path.exists():
        return {}
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        rec = e
    if not isinstance(rec, dict) or not all(isinstance(v, dict) for v in rec.values()):
        why = f"not JSON: {rec}" if isinstance(rec, Exception) else "not a dict of probes"
        raise CheckpointError(f"{path} is damaged ({why}): restore it (git checkout, if it ships) or move "
                              f"{path.parent} aside so the run trains again")
    return rec

