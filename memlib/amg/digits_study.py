"""Notebook 04, part 3: AMG on the digits DDPMs (Chen, Liu, Xu, CVPR 2024, Tables 2-3; CIFAR-10 there).

Per model (unconditional, class-conditional): unguided samples of dev seeds give lambda_t (fitted to the
``digits_percentile`` of sigma_t = -nL2 over the trajectories that did not end as Gu replicas) and c3 (the smallest
of the sweep that lowers dev Gu replication by ``digits_reduction``; Strong is the next); the test seeds are
scored without guidance, with Main and with Strong, by the pixel criteria (Gu ratio, nL2), the digits' independent
copy detector (``DigitsScorer.for_digits``: the shipped detector, trained and calibrated on the default digits
data, which is the data these DDPMs train on) and the low-pass Gu ratio, with paired intervals against no guidance
(the same seeds, so the same initial noises; each sample its own unit). Samples are cached on the weights, seeds
and settings; their wall-clock seconds go to timings.json (``DigitsResult.seconds``), not to the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.testbed import DigitsBackend
from ..cache import cached_arrays, weights_fingerprint
from ..device import compute_tag
from ..config import parse_number_list
from ..schedule import sd_scheduler
from ..testbed.digits import load_digits_model, make_digits_data
from ..train import TrainConfig
from .calibrate import calibrate
from ..mitigate.digits import DigitsScorer
from ..paired_bootstrap import paired_difference
from ..testbed.digits import DigitsDataConfig
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
    paired_vs_none: dict = field(default_factory=dict)   # 'AMG Main', 'AMG Strong' -> {column: paired change}
    copy_detector: str = ""             # the digits copy detector's checkpoint
    detector_data_matches: bool = False  # these digits are the data the detector was trained and calibrated on
    grid: dict = field(default_factory=dict, repr=False)
    seconds: dict = field(default_factory=dict, repr=False)   # run -> {'seconds_per_image', 'n'} (timings.json)

    def reduction(self, label: str = "AMG Main") -> float:
        b = self.test["none"]["gu_replication"]
        return 1 - self.test[label]["gu_replication"] / b if b > 0 else float("nan")

    def to_metrics(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("grid", "seconds")}


def _cached_samples(backend, seeds, cfg, weights: str, threshold: Threshold | None, c3: float, index):
    key = {"what": "amg-digits", "weights": weights,
           "compute": compute_tag(backend), "seeds": [seeds.start, seeds.stop], "steps": cfg.digits_steps,
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
               evals_per_image=float(arr["evals"]))
    return out


def _per_sample(scorer, arr) -> dict[str, np.ndarray]:
    """Each sample's Gu copy, detector copy and planted-copy flags, for paired comparisons."""
    x = torch.from_numpy(arr["samples"]).clamp(-1, 1)
    res = scorer.rep.query(x)
    gu = res.ratio < 1 / 3
    return {"gu": gu.astype(float), "copy": scorer.copies(x).astype(float),
            "planted": (gu & np.isin(res.nn_cluster, scorer.planted)).astype(float)}


def _paired(scorer, base, arr, seed) -> dict:
    a, b = _per_sample(scorer, base), _per_sample(scorer, arr)
    return {k: paired_difference(a[k], b[k], seed=seed).to_dict() for k in a if np.isfinite(a[k]).all()
            and np.isfinite(b[k]).all()}


def digits_scorer(cfg) -> DigitsScorer:
    """The scorer of the digits data both models train on (the default ``DigitsDataConfig``), with the shipped
    digits copy detector, which was trained and calibrated on that same data."""
    return DigitsScorer.for_digits(make_digits_data(), seed=cfg.seed, progress=cfg.progress,
                                   device=cfg.compute().device)


def run_digits(cfg, class_conditional: bool, scorer: DigitsScorer | None = None) -> DigitsResult:
    steps = cfg.digits_train_steps
    train_cfg = TrainConfig(steps=steps, batch_size=128, lr=1e-3, checkpoint_every=min(200, steps))
    unet, n_classes, meta = load_digits_model(class_conditional=class_conditional, train_cfg=train_cfg,
                                              retrain=cfg.retrain, progress=cfg.progress)
    cx = cfg.compute()
    backend = DigitsBackend(unet.to(cx.device), n_classes, meta=meta, precision=cx.dtype)
    scorer = scorer or digits_scorer(cfg)
    data = scorer.data
    detector_data = scorer.detector.trained_on.get("data")
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
    seconds = {"dev none": {"seconds_per_image": float(base["seconds"]), "n": n}}
    for c3 in sweep:
        arr = _cached_samples(backend, dev, cfg, weights, cal.threshold, c3, scorer.index)
        dev_scores[c3] = _score(scorer, arr, cfg.seed)
        seconds[f"dev c3 = {c3:g}"] = {"seconds_per_image": float(arr["seconds"]), "n": n}
    b = dev_scores["none"]["gu_replication"]
    ok = [c for c in sweep if dev_scores[c]["gu_replication"] <= (1 - cfg.digits_reduction) * b]
    main = ok[0] if ok else min(sweep, key=lambda c: dev_scores[c]["gu_replication"])
    strong = sweep[min(sweep.index(main) + 1, len(sweep) - 1)]
    arrs = {"none": _cached_samples(backend, test, cfg, weights, None, 0.0, scorer.index),
            "AMG Main": _cached_samples(backend, test, cfg, weights, cal.threshold, main, scorer.index),
            "AMG Strong": _cached_samples(backend, test, cfg, weights, cal.threshold, strong, scorer.index)}
    test_scores = {k: _score(scorer, a, cfg.seed) for k, a in arrs.items()}
    paired = {k: _paired(scorer, arrs["none"], arrs[k], cfg.seed) for k in ("AMG Main", "AMG Strong")}
    seconds.update({f"test {k}": {"seconds_per_image": float(a["seconds"]), "n": n} for k, a in arrs.items()})
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
        {str(k): v for k, v in dev_scores.items()}, main, strong, test_scores, paired, scorer.detector.name,
        detector_data == data.config.to_dict() == DigitsDataConfig().to_dict(), grid, seconds)
