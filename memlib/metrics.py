"""Replication metrics: does a generation copy a training image?

Two criteria, applied identically to every prompt group (planted positives and negatives):

- **Gu ratio** (Gu et al., "On Memorization in Diffusion Models", TMLR 2025; after Carlini et al. 2023 and
  Yoon et al. 2023): with d1 the l2 distance to the nearest training image and d2 the distance to the nearest
  training image of a *different cluster* (exact and planted near-duplicates share a cluster, otherwise d2
  would be a copy of d1), a generation replicates when d1 / d2 < 1/3. For a planted prompt we also require
  that nearest image to belong to the prompt's planted cluster.
- **Copy similarity** (copy-detection style, like SSCD cosine > 0.5 in Somepalli et al. 2023 and AMG):
  cosine similarity of mean-centred pixel vectors (normalised cross-correlation) between the generation and
  its nearest training image; reported beside the ratio with a documented threshold.

``ReplicationIndex`` holds the training set once and answers queries in chunks, so later notebooks (AMG's
per-step nearest neighbour) reuse it.

ROC helpers follow Wen et al.'s reference evaluation: TPR at 1 % FPR is the TPR of the last ROC point with
FPR < 0.01, and accuracy is the best balanced accuracy over thresholds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GU_RATIO_THRESHOLD = 1 / 3        # Gu et al.: d1/d2 < 1/3
COPY_COSINE_THRESHOLD = 0.95      # documented, applied to every group alike


@dataclass
class NeighbourResult:
    d1: np.ndarray            # l2 distance to the nearest training image
    d2: np.ndarray            # l2 distance to the nearest image of another cluster
    nn_index: np.ndarray      # row of the nearest training image
    nn_cluster: np.ndarray    # its cluster id
    copy_cosine: np.ndarray   # normalised cross-correlation with the nearest image

    @property
    def ratio(self) -> np.ndarray:
        return self.d1 / np.maximum(self.d2, 1e-12)

    def replicated(self, planted_cluster: np.ndarray | None = None, threshold: float = GU_RATIO_THRESHOLD):
        """Gu criterion; with ``planted_cluster`` (per query, -1 = none) the NN must also be in that cluster."""
        ok = self.ratio < threshold
        if planted_cluster is not None:
            pc = np.asarray(planted_cluster)
            ok = ok & np.where(pc >= 0, self.nn_cluster == pc, True)
        return ok


class ReplicationIndex:
    """Exact nearest-neighbour search over flattened training images (l2), cluster-aware."""

    def __init__(self, images: torch.Tensor, clusters: np.ndarray | None = None, chunk: int = 512):
        self.x = images.reshape(len(images), -1).float()
        self.sq = (self.x ** 2).sum(1)
        self.clusters = np.asarray(clusters) if clusters is not None else np.arange(len(images))
        self._cl = torch.as_tensor(self.clusters)
        self.chunk = chunk
        xc = self.x - self.x.mean(1, keepdim=True)
        self.xc = xc / xc.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def __len__(self) -> int:
        return len(self.x)

    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        q = queries.reshape(len(queries), -1).float()
        d2 = (q ** 2).sum(1, keepdim=True) + self.sq[None] - 2 * q @ self.x.T
        return d2.clamp_min(0).sqrt()

    def query(self, queries: torch.Tensor) -> NeighbourResult:
        if queries[0].numel() != self.x.shape[1]:
            raise ValueError(f"query images have {queries[0].numel()} values each, the index {self.x.shape[1]}")
        out = {k: [] for k in ("d1", "d2", "nn", "cl", "cos")}
        for s in range(0, len(queries), self.chunk):
            q = queries[s:s + self.chunk]
            d = self.distances(q)
            d1, nn = d.min(1)
            other = self._cl[None] != self._cl[nn][:, None]
            d2 = torch.where(other, d, torch.inf).min(1).values
            qc = q.reshape(len(q), -1).float()
            qc = qc - qc.mean(1, keepdim=True)
            qc = qc / qc.norm(dim=1, keepdim=True).clamp_min(1e-8)
            cos = (qc * self.xc[nn]).sum(1)
            for k, v in zip(("d1", "d2", "nn", "cl", "cos"), (d1, d2, nn, self._cl[nn], cos)):
                out[k].append(v.numpy())
        cat = {k: np.concatenate(v) for k, v in out.items()}
        return NeighbourResult(cat["d1"], cat["d2"], cat["nn"], cat["cl"], cat["cos"])


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID's formula)."""
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least 2 samples per set")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular: regularise as pytorch-fid does
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@dataclass
class RocResult:
    auc: float
    tpr_at_1fpr: float
    accuracy: float
    fpr: np.ndarray
    tpr: np.ndarray


def roc(pos_scores, neg_scores) -> RocResult:
    """ROC of 'higher score = memorized' with scikit-learn."""
    from sklearn.metrics import roc_auc_score, roc_curve

    pos, neg = np.asarray(pos_scores, float), np.asarray(neg_scores, float)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"ROC needs positives and negatives (got {len(pos)} and {len(neg)})")
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[pos, neg]
    # every threshold kept: with tied scores sklearn's default drops collinear points, among them the last
    # one below 1 % FPR (Wen's evaluation used the default; it differs only when positives tie negatives)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    below = np.flatnonzero(fpr < 0.01)
    return RocResult(float(roc_auc_score(y, s)), float(tpr[below[-1]]) if len(below) else 0.0,
                     float(np.max(1 - (fpr + (1 - tpr)) / 2)), fpr, tpr)


def auc_and_tpr(pos_scores, neg_scores) -> tuple[float, float]:
    """(AUC, TPR at 1 % FPR) as ``roc`` computes them, without building the curve (fast, for bootstraps).

    AUC is the Mann-Whitney statistic (ties count half). TPR at 1 % FPR: with k the most false positives that keep
    FPR < 0.01 (k = ceil(0.01 n_neg) - 1, so 0 below 100 negatives), the share of positives scoring above the
    (k+1)-th highest negative."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos_scores, float), np.asarray(neg_scores, float)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"ROC needs positives and negatives (got {len(pos)} and {len(neg)})")
    ranks = rankdata(np.r_[pos, neg])
    auc = (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    k = int(np.ceil(0.01 * len(neg))) - 1
    cut = np.sort(neg)[::-1][k]
    return float(auc), float((pos > cut).mean())


def tpr_statistic_name(n_negatives: int) -> str:
    """'tpr_at_1fpr' with >= 100 negatives; below that the statistic is the TPR at zero false positives."""
    return "tpr_at_1fpr" if n_negatives >= 100 else "tpr_at_zero_fp"


@dataclass
class BootstrapRoc:
    """Point estimates and percentile intervals (bootstrap over prompts, positives and negatives resampled
    separately) of AUC and TPR at 1 % FPR; ``replicates`` (n_boot, 2) lets callers pool over seeds."""
    auc: float
    tpr: float
    auc_ci: tuple[float, float]
    tpr_ci: tuple[float, float]
    n_pos: int
    n_neg: int
    replicates: np.ndarray

    @property
    def tpr_name(self) -> str:
        return tpr_statistic_name(self.n_neg)


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    v = np.asarray(values, float)
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def bootstrap_roc(pos_scores, neg_scores, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapRoc:
    """AUC and TPR at 1 % FPR with percentile bootstrap intervals over prompts."""
    pos, neg = np.asarray(pos_scores, float), np.asarray(neg_scores, float)
    auc, tpr = auc_and_tpr(pos, neg)
    rng = np.random.default_rng(seed)
    reps = np.array([auc_and_tpr(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
                     for _ in range(n_boot)])
    return BootstrapRoc(auc, tpr, percentile_interval(reps[:, 0], level), percentile_interval(reps[:, 1], level),
                        len(pos), len(neg), reps)


def bootstrap_mean(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, tuple, np.ndarray]:
    """(mean, percentile interval, replicates) of the mean of ``values`` resampled with replacement."""
    v = np.asarray(values, float)
    if len(v) == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    rng = np.random.default_rng(seed)
    reps = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return float(v.mean()), percentile_interval(reps, level), reps
