"""Is a model that "memorizes less" simply under-fitted? (notebook 06; IET-AGC, Liu et al., ECCV 2024).

IET-AGC's memorization ratio r = d1 / (mean of the 50 smallest squared distances to the training set) is low for
a copy. A model that has not learned the data well puts its samples *farther* from the training set than real
unseen digits are, which also lowers every copy count. So each run's samples are compared with real held-out
digits (never trained on) against the same deduplicated training digits: the share of samples whose nearest
distance d1, and whose ratio r, lie above the real digits' median. Real unseen data give 0.5 by construction; a
share well above 0.5 says the samples sit farther from the data than unseen data do, i.e. under-fitting, which a
lower memorization score alone cannot tell apart from less copying.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import bootstrap_mean
from ..mitigate.digits import mq_ratio

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def nearest_sq_distance(x: torch.Tensor, train: torch.Tensor, chunk: int = 1024) -> np.ndarray:
    """Squared l2 distance from each image to its nearest training image (d1 of the memorization ratio)."""
    t = train.flatten(1).double()
    out = []
    for s in range(0, len(x), chunk):
        q = x[s:s + chunk].flatten(1).double()
        d = ((q ** 2).sum(1, keepdim=True) + (t ** 2).sum(1)[None] - 2 * q @ t.T).clamp_min(0)
        out.append(d.min(1).values.numpy())
    return np.concatenate(out) if out else np.zeros(0)


class UnderfitCheck:
    """The real held-out digits' distances, computed once; ``__call__`` scores a run's samples against them."""

    def __init__(self, heldout: torch.Tensor, train_unique: torch.Tensor):
        self.train = train_unique
        self.real_d1 = nearest_sq_distance(heldout.clamp(-1, 1), train_unique)
        self.real_ratio = mq_ratio(heldout.clamp(-1, 1), train_unique)

    def __call__(self, x: torch.Tensor, seed: int = 0) -> dict:
        x = x.clamp(-1, 1)
        d1, ratio = nearest_sq_distance(x, self.train), mq_ratio(x, self.train)
        farther, ci, _ = bootstrap_mean((d1 > np.median(self.real_d1)).astype(float), seed=seed)
        return {"farther_than_real_share": float(farther), "farther_than_real_share_ci": [float(v) for v in ci],
                "ratio_above_real_share": float((ratio > np.median(self.real_ratio)).mean()),
                "d1_quantiles": [float(v) for v in np.quantile(d1, QUANTILES)],
                "ratio_quantiles": [float(v) for v in np.quantile(ratio, QUANTILES)]}

    def reference(self) -> dict:
        """The same record for the real held-out digits themselves (their shares are 0.5 up to ties)."""
        return {"farther_than_real_share": float((self.real_d1 > np.median(self.real_d1)).mean()),
                "ratio_above_real_share": float((self.real_ratio > np.median(self.real_ratio)).mean()),
                "d1_quantiles": [float(v) for v in np.quantile(self.real_d1, QUANTILES)],
                "ratio_quantiles": [float(v) for v in np.quantile(self.real_ratio, QUANTILES)]}
