"""AMG on the digits DDPMs: the analogue of Tables 2-3 (Chen, Liu, Xu, CVPR 2024, Sec. 6.2; CIFAR-10 there).

Unconditional and class-conditional models (``memlib.testbed.digits``) are guided by dissimilarity alone, as the
paper does for them, with sigma = -nL2 (Eq. 8; k = 50, alpha = 0.5) of x0_hat against the deduplicated training
set (the released code also indexes a deduplicated copy). Scored on each sample:

- nL2 and the shares below 1.4 and 1.6 (the paper's criterion), its 5th percentile and minimum;
- Gu replication (d1 / d2 < 1/3, the second neighbour from another source digit) and whether the nearest training
  row is a planted duplicate;
- Fréchet distance of a small digits classifier's hidden features against the held-out real digits, beside the
  floor (the same distance for as many real training digits).
lambda_t is fitted on dev-seed trajectories that did not end as Gu replicas (``calibrate``), c3 on dev seeds;
everything is reported on the test seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import ReplicationIndex, bootstrap_mean, frechet_distance
from ..mitigate.similarity import SimilarityIndex
from ..sampling import sample, seeded_rows
from ..schedule import sd_scheduler
from .guidance import AMGGuidance, AMGSettings
from .threshold import Threshold


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

    def __init__(self, data, seed: int = 0):
        self.data = data
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

    def nl2(self, x: torch.Tensor) -> np.ndarray:
        return self.index.nl2(x.flatten(1).float())[0].numpy()

    def score(self, x: torch.Tensor, seed: int = 0) -> dict:
        x = x.clamp(-1, 1)
        nl2 = self.nl2(x)
        res = self.rep.query(x)
        gu = res.ratio < 1 / 3
        planted = np.isin(res.nn_cluster, self.planted)
        mean, ci, _ = bootstrap_mean(gu.astype(float), seed=seed)
        return {"n": len(x), "nl2_below_1.4": float((nl2 < 1.4).mean()), "nl2_below_1.6": float((nl2 < 1.6).mean()),
                "nl2_p5": float(np.percentile(nl2, 5)), "nl2_min": float(nl2.min()),
                "gu_replication": float(mean), "gu_replication_ci": list(ci),
                "planted_replication": float((gu & planted).mean()), "nn_is_planted": float(planted.mean()),
                "frechet": frechet_distance(self.features(x), self.reference), "frechet_floor": self.floor}


@dataclass
class DigitsRun:
    samples: torch.Tensor      # (N, 1, 8, 8) in [-1, 1]
    sigma: np.ndarray          # (N, S) sigma_t = -nL2 of x0_hat
    fired: np.ndarray          # (N, S) the switch fired
    seconds_per_image: float
    evals_per_image: float


def sample_digits(backend, seeds, steps: int = 50, threshold: Threshold | None = None, c3: float = 0.0,
                  index: SimilarityIndex | None = None, schedule: str = "code", batch: int = 500) -> DigitsRun:
    """DDIM samples of a digits model from per-seed noises; class-conditional models get class seed % 10 (the
    paper cycles classes the same way) without classifier-free guidance. With ``threshold`` and ``index``,
    AMG's dissimilarity guidance (c3) acts where sigma_t > lambda_t; with c3 = 0 sigma_t is only recorded."""
    seeds = list(seeds)
    n, S = len(seeds), steps
    record = {"_rows": n}
    out, evals, t0 = [], 0.0, time.time()
    never = Threshold("constant", 1e9, 0.0, 0.0)
    settings = AMGSettings(terms=("sim",), similarity="nl2", c3=c3, schedule=schedule)
    for s in range(0, n, batch):
        part = seeds[s:s + batch]
        rows = list(range(s, s + len(part)))
        x_T, gens = seeded_rows(backend.sample_shape, part, backend.device)
        labels = backend.labels([sd % 10 for sd in part]) if backend.n_classes else None
        hooks = []
        if index is not None:
            hooks = [AMGGuidance(settings, index, threshold if (threshold and c3 > 0) else never,
                                 record=record, rows=rows)]
        stats: dict = {}
        with torch.no_grad():
            x = sample(backend.eps, x_T, sd_scheduler("ddim"), steps, cond=None, uncond=labels, hooks=hooks,
                       generator=gens, stats=stats)
        out.append(x.clamp(-1, 1).cpu())
        evals += stats["model_evals_per_image"] * len(part)
    nan = np.full((n, S), np.nan, np.float32)
    return DigitsRun(torch.cat(out), record.get("sigma", nan), record.get("fired", nan),
                     (time.time() - t0) / n, evals / n)
