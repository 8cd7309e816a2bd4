"""Notebook 04, part 3: AMG on the digits DDPMs (Chen, Liu, Xu, CVPR 2024, Tables 2-3; CIFAR-10 there).

Per model (unconditional, class-conditional): unguided samples of dev seeds give lambda_t (fitted to the
``digits_percentile`` of sigma_t = -nL2 over the trajectories that did not end as Gu replicas) and c3 (the smallest
of the sweep that lowers dev Gu replication by ``digits_reduction``; Strong is the next); the test seeds are
scored without guidance, with Main and with Strong. Samples are cached on the weights, seeds and settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.testbed import DigitsBackend
from ..cache import cached_arrays, weights_fingerprint
from ..config import parse_number_list
from ..schedule import sd_scheduler
from ..testbed.digits import load_digits_model, make_digits_data
from ..train import TrainConfig
from .calibrate import calibrate
from ..mitigate.digits import DigitsScorer
from .digits import sample_digits
from .threshold import Threshold

DEV_SEED, TEST_SEED = 100_000, 200_000


@dataclass
class DigitsResult:
    model: str
    checkpoint: str
    n_train_rows: int
    n_planted: int
    classifier_accuracy: float          # of the Fréchet feature classifier on the held-out real digits
    real_heldout_nl2_below_1_4: float   # unseen real digits that nL2 < 1.4 would call memorized
    calibration: dict
    dev: dict                           # 'none' and c3 -> scores on the dev seeds
    main_c3: float
    strong_c3: float
    test: dict                          # 'none', 'AMG Main', 'AMG Strong' -> scores on the test seeds
    grid: dict = field(default_factory=dict, repr=False)

    def reduction(self, label: str = "AMG Main") -> float:
        b = self.test["none"]["gu_replication"]
        return 1 - self.test[label]["gu_replication"] / b if b > 0 else float("nan")

    def to_metrics(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "grid"}


def _cached_samples(backend, seeds, cfg, weights: str, threshold: Threshold | None, c3: float, index):
    key = {"what": "amg-digits", "weights": weights, "seeds": [seeds.start, seeds.stop], "steps": cfg.digits_steps,
           "c3": c3, "threshold": threshold.to_dict() if threshold else None}

    def compute():
        r = sample_digits(backend, seeds, cfg.digits_steps, threshold, c3, index)
        return {"samples": r.samples.numpy(), "sigma": r.sigma, "fired": r.fired,
                "seconds": np.float64(r.seconds_per_image), "evals": np.float64(r.evals_per_image)}

    return cached_arrays("amg", key, compute)


def _score(scorer, arr, seed) -> dict:
    out = scorer.score(torch.from_numpy(arr["samples"]), seed=seed)
    fired = arr["fired"]
    out.update(fired_share=float(np.nan_to_num(fired).any(1).mean()) if np.isfinite(fired).any() else 0.0,
               seconds_per_image=float(arr["seconds"]), evals_per_image=float(arr["evals"]))
    return out


def run_digits(cfg, class_conditional: bool) -> DigitsResult:
    steps = cfg.digits_train_steps
    train_cfg = TrainConfig(steps=steps, batch_size=128, lr=1e-3, checkpoint_every=min(200, steps))
    unet, n_classes, meta = load_digits_model(class_conditional=class_conditional, train_cfg=train_cfg,
                                              retrain=cfg.retrain, progress=cfg.progress)
    backend = DigitsBackend(unet, n_classes, meta=meta)
    data = make_digits_data()
    scorer = DigitsScorer(data, seed=cfg.seed)
    weights = weights_fingerprint(unet)
    n = cfg.digits_samples // 2 * 2
    dev, test = range(DEV_SEED, DEV_SEED + n), range(TEST_SEED, TEST_SEED + n)
    sched = sd_scheduler("ddim")
    sched.set_timesteps(cfg.digits_steps)
    ts = sched.timesteps.numpy()

    base = _cached_samples(backend, dev, cfg, weights, None, 0.0, scorer.index)
    rep = scorer.rep.query(torch.from_numpy(base["samples"])).ratio < 1 / 3
    cal = calibrate(base["sigma"][~rep], ts, cfg.digits_percentile)
    dev_scores = {"none": _score(scorer, base, cfg.seed)}
    sweep = parse_number_list("digits_c3_sweep", cfg.digits_c3_sweep, float)
    for c3 in sweep:
        dev_scores[c3] = _score(scorer, _cached_samples(backend, dev, cfg, weights, cal.threshold, c3, scorer.index),
                                cfg.seed)
    b = dev_scores["none"]["gu_replication"]
    ok = [c for c in sweep if dev_scores[c]["gu_replication"] <= (1 - cfg.digits_reduction) * b]
    main = ok[0] if ok else min(sweep, key=lambda c: dev_scores[c]["gu_replication"])
    strong = sweep[min(sweep.index(main) + 1, len(sweep) - 1)]
    arrs = {"none": _cached_samples(backend, test, cfg, weights, None, 0.0, scorer.index),
            "AMG Main": _cached_samples(backend, test, cfg, weights, cal.threshold, main, scorer.index),
            "AMG Strong": _cached_samples(backend, test, cfg, weights, cal.threshold, strong, scorer.index)}
    test_scores = {k: _score(scorer, a, cfg.seed) for k, a in arrs.items()}
    # the grid: test samples the unguided model copies, next to the guided ones from the same noise
    copies = np.flatnonzero(scorer.rep.query(torch.from_numpy(arrs["none"]["samples"])).ratio < 1 / 3)[:10]
    copies = copies if len(copies) else np.arange(min(10, n))
    grid = {k: torch.from_numpy(a["samples"][copies]) for k, a in arrs.items()}
    nn = scorer.rep.query(grid["none"]).nn_index
    grid["nearest training digit"] = data.images[nn]
    return DigitsResult(
        "class-conditional" if class_conditional else "unconditional", meta.get("folder", ""),
        int(len(data.images)), int(data.duplicated.sum()), scorer.classifier_accuracy,
        float((scorer.nl2(data.heldout_images) < 1.4).mean()), cal.to_dict(),
        {str(k): v for k, v in dev_scores.items()}, main, strong, test_scores, grid)
