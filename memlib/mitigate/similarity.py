"""A differentiable similarity index over the training images, for methods that guide on similarity (AMG's
sigma_t, Chen, Liu, Xu, CVPR 2024, Sec. 4) and for the harness's privacy columns.

- ``ncc``: normalized cross-correlation (cosine of mean-centred pixel vectors), the object-level stand-in for
  SSCD on the pixel testbed; ``topk_ncc`` gives each query's k most similar training images.
- ``nl2`` (Carlini et al. 2023; AMG Eq. 8): l2(x, n_1) / (alpha * mean l2(x, n_j) over the k nearest n_j),
  k = 50 and alpha = 0.5 by default; below 1.4 counts as memorized on CIFAR-10 in AMG.
Everything is batched and differentiable in the query (gradients flow through the selected neighbours; the
selection itself is piecewise constant). Methods are judged by the Gu ratio, not by the index they optimize.
"""
from __future__ import annotations

import torch


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).float()
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def pixel_ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise NCC of two equally shaped batches: (B, ...) x (B, ...) -> (B,)."""
    return (_centred(a) * _centred(b)).sum(1)


class SimilarityIndex:
    """The training images once, queried in batches. ``images``: (N, ...) in the generator's pixel range."""

    def __init__(self, images: torch.Tensor):
        if images.ndim < 2 or len(images) == 0:
            raise ValueError("the similarity index needs a non-empty (N, ...) batch of training images")
        self.x = images.flatten(1).float()
        self.xc = _centred(self.x)
        self.sq = (self.x ** 2).sum(1)

    def __len__(self) -> int:
        return len(self.x)

    def _check(self, q: torch.Tensor) -> torch.Tensor:
        q = q.flatten(1).float()
        if q.shape[1] != self.x.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} values each, the index {self.x.shape[1]}")
        return q

    def ncc(self, q: torch.Tensor) -> torch.Tensor:
        """(B, N) NCC of every query with every training image."""
        return _centred(self._check(q)) @ self.xc.to(q.device).T

    def topk_ncc(self, q: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The k highest NCCs per query and their training rows, (B, k) each."""
        return self.ncc(q).topk(min(k, len(self)), dim=1)

    def ncc_to(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """NCC of query b with training row rows[b], (B,)."""
        return (_centred(self._check(q)) * self.xc.to(q.device)[torch.as_tensor(rows, device=q.device)]).sum(1)

    def l2(self, q: torch.Tensor) -> torch.Tensor:
        """(B, N) l2 distances (differentiable; clamped at a tiny floor so the gradient at 0 is finite)."""
        q = self._check(q)
        d2 = (q ** 2).sum(1, keepdim=True) + self.sq.to(q.device)[None] - 2 * q @ self.x.to(q.device).T
        return d2.clamp_min(1e-12).sqrt()

    def nl2(self, q: torch.Tensor, k: int = 50, alpha: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """(nL2 (B,), nearest row (B,)): the nearest distance over alpha times the mean of the k nearest."""
        if k < 1 or alpha <= 0:
            raise ValueError(f"nL2 needs k >= 1 and alpha > 0 (got k={k}, alpha={alpha})")
        d, idx = self.l2(q).topk(min(k, len(self)), dim=1, largest=False)
        return d[:, 0] / (alpha * d.mean(1)), idx[:, 0]
