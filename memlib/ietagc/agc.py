"""The per-sample rules of IET-AGC (ECCV 2024, Sec. 3.3) and IET-AGC+ (arXiv 2502.09434), as the released code
implements them (``../shared/papers/ietagc_liu.md`` Secs. 1.2 and 2):

- **AGC**: each proxy keeps a loss bank M (one entry per timestep, starting at 0). Sample i is skipped when
  r * l_i < M[t_i] (r = 2 unconditional, 1.25 for Stable Diffusion); the gradient is the mean over kept samples;
  then every sample, skipped or not, updates its timestep in turn, M[t_i] <- beta M[t_i] + (1 - beta) l_i
  (beta = 0.8). Nothing is skipped at a timestep before it has been seen.
- **TAA**: a kept sample's distance to the threshold d_i = |r l_i - M[t_i]| / M[t_i] gives its augmentation
  strength s_i = exp(-kappa d_i) (kappa = 5): borderline samples are augmented most.
- **MSR**: on alternate rounds, instead of averaging, shard k passes its most-skipped fraction p (0.25) of rows to
  shard (k + 1) mod K, ties broken by row order; shard sizes stay the same.
"""
from __future__ import annotations

import math

import torch

from ..train import Batch


class AGCHook:
    """A ``sample_hook`` for ``memlib.train.train_loop``: weights 1 (kept) or 0 (skipped) per sample.

    Its state lives in the run's ``loss_state`` (``bank``: (T,) float; the loop adds ``skips`` per row), so it is
    checkpointed with the proxy and kept across rounds. ``last`` holds the latest batch's kept mask and TAA
    strengths (for a TAA step, and for plots)."""

    def __init__(self, r: float = 2.0, beta: float = 0.8, n_timesteps: int = 1000, kappa: float = 5.0):
        if not (r > 0 and 0 <= beta < 1 and n_timesteps > 0 and kappa >= 0):
            raise ValueError(f"AGC needs r > 0, 0 <= beta < 1, n_timesteps > 0, kappa >= 0 (got r={r}, "
                             f"beta={beta}, n_timesteps={n_timesteps}, kappa={kappa})")
        self.r, self.beta, self.T, self.kappa = float(r), float(beta), int(n_timesteps), float(kappa)
        self.last: dict[str, torch.Tensor] = {}

    def __call__(self, b: Batch) -> torch.Tensor:
        if b.losses.t is None:
            raise ValueError("AGC needs the timestep of each sample: make loss_fn return Losses with t")
        loss = b.losses.loss.detach().float().cpu()
        t = b.losses.t.detach().long().cpu()
        if int(t.min()) < 0 or int(t.max()) >= self.T:
            raise ValueError(f"timesteps must lie in [0, {self.T}); got {int(t.min())}..{int(t.max())}")
        bank = b.state.setdefault("bank", torch.zeros(self.T))
        threshold = bank[t].clone()
        keep = self.r * loss >= threshold
        for ti, li in zip(t.tolist(), loss.tolist()):   # in turn, as the code does (a timestep may repeat)
            bank[ti] = self.beta * bank[ti] + (1 - self.beta) * li
        self.last = {"rows": b.rows.detach().cpu(), "keep": keep, "loss": loss, "t": t, "threshold": threshold,
                     "strength": taa_strength(loss, threshold, self.r, self.kappa) * keep}
        return keep.to(b.losses.loss.dtype)


def taa_strength(loss: torch.Tensor, threshold: torch.Tensor, r: float, kappa: float = 5.0) -> torch.Tensor:
    """s_i = exp(-kappa |r l_i - M[t_i]| / M[t_i]): 1 at the skip boundary, 0 where the bank is still empty."""
    seen = threshold > 0
    d = (r * loss - threshold).abs() / torch.where(seen, threshold, torch.ones_like(threshold))
    return torch.where(seen, torch.exp(-kappa * d), torch.zeros_like(d))


def augment_magnitude(strengths: torch.Tensor, base: int = 5) -> int:
    """RandAugment magnitude of a TAA batch: floor(mean strength x base)."""
    return int(math.floor(float(strengths.float().mean()) * base)) if len(strengths) else 0


def redistribute(shards: list[torch.Tensor], skips: torch.Tensor, fraction: float = 0.25) -> list[torch.Tensor]:
    """MSR's ring: shard k gives its ``fraction`` most-skipped rows (ties: lower row first) to shard (k+1) mod K."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction = {fraction}: give a share in [0, 1]")
    if len(shards) < 2:
        return [s.clone() for s in shards]
    moved, kept = [], []
    for rows in shards:
        rows = rows.long()
        n = int(round(fraction * len(rows)))
        order = sorted(range(len(rows)), key=lambda i: (-int(skips[rows[i]]), int(rows[i])))
        out = set(order[:n])
        moved.append(rows[[i for i in order[:n]]] if n else rows[:0])
        kept.append(rows[[i for i in range(len(rows)) if i not in out]])
    K = len(shards)
    return [torch.cat([kept[k], moved[(k - 1) % K]]) for k in range(K)]
