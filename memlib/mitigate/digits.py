"""Scoring digits DDPM samples against their training set: shared by AMG's digits study (Chen, Liu, Xu, CVPR 2024,
Sec. 6.2) and IET-AGC+ (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434).

- Gu replication: d1 / d2 < 1/3, the second neighbour from another source digit (Gu et al., TMLR 2025), and
  whether the nearest training row is a planted duplicate;
- IET-AGC's memorization ratio (their ``attack/compute_l1.py``): with squared pixel distances d to the
  deduplicated training digits, r = d1 / (mean of the 50 smallest d, d1 included); a generation counts as
  memorized below a threshold (counts at each of their thresholds are kept). On 8x8 digits 1/3 calls 31 % of real
  unseen digits copies, so ``calibrated_threshold`` takes the largest threshold that calls at most 5 % of them so;
- nL2 (Carlini et al. 2023; AMG Eq. 8) and its shares below 1.4 and 1.6;
- Fréchet distance of a small digits classifier's hidden features against the held-out real digits, beside the
  floor (the same distance for as many real training digits);
- the independent copy detector's copy rate (``memlib.copydetect``, the shipped digits descriptor, calibrated on
  real held-out digits; no method optimizes it) and the Gu ratio after a low-pass filter, beside the pixel criteria.
"""
from __future__ import annotations

import numpy as np
import torch

from ..copydetect import CopyDetector, lowpass_gu_ratio
from ..metrics import ReplicationIndex, bootstrap_mean, frechet_distance
from ..testbed.copy_detector import load_digits_detector
from .similarity import SimilarityIndex

MQ_THRESHOLDS = (0.15, 0.2, 0.3, 1 / 3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def mq_ratio(x: torch.Tensor, train: torch.Tensor, k: int = 50, chunk: int = 1024) -> np.ndarray:
    """d1 / mean of the k smallest squared l2 distances from each generation to the training images."""
    t = train.flatten(1).double()
    out = []
    for s in range(0, len(x), chunk):
        q = x[s:s + chunk].flatten(1).double()
        d = ((q ** 2).sum(1, keepdim=True) + (t ** 2).sum(1)[None] - 2 * q @ t.T).clamp_min(0)
        near = d.topk(min(k, d.shape[1]), dim=1, largest=False).values
        out.append((near[:, 0] / near.mean(1).clamp_min(1e-12)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


class DigitsFeatures:
    """Hidden-layer features of a small MLP digit classifier trained on the training digits (deterministic)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hidden: int = 128, seed: int = 0):
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=seed, max_iter=600)
        self.clf.fit(images.flatten(1).numpy(), labels.numpy())

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.flatten(1).numpy().astype(np.float64)
        return np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.clf.predict(images.flatten(1).numpy()) == labels.numpy()).mean())


class DigitsScorer:
    """The digits' neighbour indexes, classifier features and Fréchet reference, built once."""

    def __init__(self, data, seed: int = 0, detector: CopyDetector | None = None):
        """``detector``: the digits' independent copy detector (``for_digits`` loads the shipped one); None leaves
        its column unmeasured (NaN)."""
        self.data, self.detector = data, detector
        self.train_descriptors = detector.embed(data.images) if detector is not None else None
        first = np.unique(data.cluster, return_index=True)[1]       # one row per source digit
        self.unique = data.images[first]
        self.index = SimilarityIndex(self.unique)
        self.rep = ReplicationIndex(data.images, data.cluster)
        self.planted = np.unique(data.cluster[data.duplicated])
        self.features = DigitsFeatures(self.unique, data.labels[first], seed=seed)
        self.reference = self.features(data.heldout_images)
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(self.unique), size=min(len(self.unique), 1000), replace=False)
        self.floor = frechet_distance(self.features(self.unique[pick]), self.reference)
        self.classifier_accuracy = self.features.accuracy(data.heldout_images, data.heldout_labels)

    @classmethod
    def for_digits(cls, data, seed: int = 0, progress: bool = False, device=None) -> "DigitsScorer":
        """The scorer with the shipped digits copy detector (trained and calibrated once if missing), run on
        ``device``."""
        return cls(data, seed, load_digits_detector(progress=progress, device=device))

    def copies(self, x: torch.Tensor) -> np.ndarray:
        """Whether the copy detector calls each sample a copy of a training digit (NaN without a detector)."""
        if self.detector is None:
            return np.full(len(x), np.nan)
        return self.detector.nearest(x.float(), self.train_descriptors)[1] > self.detector.threshold

    def nl2(self, x: torch.Tensor) -> np.ndarray:
        return self.index.nl2(x.flatten(1).float())[0].numpy()

    def score(self, x: torch.Tensor, seed: int = 0) -> dict:
        x = x.clamp(-1, 1)
        nl2 = self.nl2(x)
        res = self.rep.query(x)
        gu = res.ratio < 1 / 3
        planted = np.isin(res.nn_cluster, self.planted)
        mean, ci, _ = bootstrap_mean(gu.astype(float), seed=seed)
        copy = self.copies(x).astype(float)
        copy_mean, copy_ci = float("nan"), [float("nan")] * 2
        if not np.isnan(copy).any():
            copy_mean, ci_copy, _ = bootstrap_mean(copy, seed=seed)
            copy_ci = list(ci_copy)
        lowpass = lowpass_gu_ratio(x, self.data.images, self.data.cluster).ratio < 1 / 3
        return {"n": len(x), "copy_rate": copy_mean, "copy_rate_ci": copy_ci,
                "lowpass_replication": float(lowpass.mean()), "nl2_below_1.4": float((nl2 < 1.4).mean()), "nl2_below_1.6": float((nl2 < 1.6).mean()),
                "nl2_p5": float(np.percentile(nl2, 5)), "nl2_min": float(nl2.min()),
                "gu_replication": float(mean), "gu_replication_ci": list(ci),
                "planted_replication": float((gu & planted).mean()), "nn_is_planted": float(planted.mean()),
                "frechet": frechet_distance(self.features(x), self.reference), "frechet_floor": self.floor}

    def memorization(self, x: torch.Tensor, seed: int = 0, threshold: float = 1 / 3) -> dict:
        """IET-AGC's memorization ratio against the deduplicated training digits: the share of generations under
        ``threshold`` (``mem_score``, with a bootstrap interval) and the count under each of ``MQ_THRESHOLDS``."""
        r = mq_ratio(x.clamp(-1, 1), self.unique)
        mean, ci, _ = bootstrap_mean((r < threshold).astype(float), seed=seed)
        return {"mem_score": float(mean), "mem_score_ci": list(ci), "mem_threshold": float(threshold),
                "mq_ratio_median": float(np.median(r)),
                "mq_counts": {f"{t:.3g}": int((r < t).sum()) for t in MQ_THRESHOLDS}}

    def calibrated_threshold(self, max_share: float = 0.05) -> float:
        """The largest of ``MQ_THRESHOLDS`` under which at most ``max_share`` of the real held-out digits (never
        trained on) fall: on 8x8 digits near neighbours are close, so 1/3 would call many unseen digits copies."""
        r = mq_ratio(self.data.heldout_images, self.unique)
        ok = [t for t in MQ_THRESHOLDS if (r < t).mean() <= max_share]
        if not ok:
            raise ValueError(f"more than {max_share:.0%} of real held-out digits fall under every threshold "
                             f"{MQ_THRESHOLDS}; give mem_threshold explicitly")
        return max(ok)
