"""Notebook 06: IET-AGC+ on the digits (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434).

The runs (``runs.RunPlan``: baseline, IET, +AGC, +MSR, +TAA = the full method, two seeds for the baseline and the
full method, a baseline trained twice as long, a large-batch baseline with IET's number of sequential steps) are trained once by ``launch`` (torchrun) and ship; this module
launches any that are missing, then evaluates every final model on the same test seeds: IET-AGC's memorization
ratio (the share under 1/3 is the memorization score, counts at every threshold kept), Gu and planted
replication, Fréchet distance of digit-classifier features against held-out real digits. The memorization-
fidelity frontier and the curves over rounds come from what the jobs recorded while training (``probe``): every
baseline checkpoint and every IET round scored on the same probe seeds. No knob is tuned here: r, beta, kappa,
A and p are the papers' defaults, so the study has no dev half; probe and test seeds are disjoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache import cached_arrays, weights_fingerprint
from ..checkpoint import load_weights, set_aside
from ..config import Config, check_range, parse_number_list
from ..mitigate.digits import MQ_THRESHOLDS, DigitsScorer
from ..testbed.digits import DigitsDataConfig, make_digits_data
from ..testbed.model import make_unconditional_unet
from .findings import metrics
from .launch import model_config
from .premise import row_losses
from .probe import read_progress, sample_unconditional
from .runs import RunPlan, finished, launch, run_folder

EVAL_SEED = 400_000


@dataclass
class IETAGCStudyConfig(Config):
    steps: int = 3000                 # baseline optimizer steps; every run gets the same probe sample visits
    batch_size: int = 128
    shards: int = 4                   # K proxy models
    rounds: int = 10                  # R
    ranks: int = 2                    # torchrun processes (a rank trains shards k with k % ranks == rank)
    seeds: str = "0,1"                # baseline and full method; the components use the first
    block_out_channels: str = "16,32"
    frontier_points: int = 8
    long_factor: int = 2
    bigbatch: bool = True             # the control: one model, shards x batch, steps / shards
    probe_samples: int = 1000
    n_duplicated: int = 20
    copies: int = 30
    max_images: int = 0
    mem_threshold: float = 0.0       # memorization ratio threshold; 0: calibrated on real held-out digits
    mem_heldout_share: float = 0.05  # ... the largest of IET-AGC's thresholds calling at most this share copies
    eval_samples: int = 2000
    sample_steps: int = 50
    loss_noises: int = 4
    retrain: bool = False
    seed: int = 0

    def validate(self) -> None:
        check_range("ranks", self.ranks, 1, 64)
        check_range("eval_samples", self.eval_samples, 16)     # the sample grid shows 16
        check_range("sample_steps", self.sample_steps, 1, 1000)
        check_range("mem_heldout_share", self.mem_heldout_share, 0.0, 1.0)
        if self.mem_threshold and not any(abs(self.mem_threshold - t) < 1e-9 for t in MQ_THRESHOLDS):
            raise ValueError(f"parameter 'mem_threshold' = {self.mem_threshold}: give 0 (calibrated) or one of "
                             f"{[round(t, 3) for t in MQ_THRESHOLDS]} (the training probes count at those)")
        self.plan()

    def plan(self) -> RunPlan:
        return RunPlan(steps=self.steps, batch=self.batch_size, shards=self.shards, rounds=self.rounds,
                       frontier_points=self.frontier_points,
                       seeds=tuple(parse_number_list("seeds", self.seeds, lo=0)),
                       block_out_channels=tuple(parse_number_list("block_out_channels", self.block_out_channels,
                                                                  lo=8)),
                       n_duplicated=self.n_duplicated, copies=self.copies, max_images=self.max_images,
                       probe_samples=self.probe_samples, probe_steps=self.sample_steps,
                       probe_noises=self.loss_noises, long_factor=self.long_factor,
                       bigbatch=self.bigbatch)


@dataclass
class IETAGCResult:
    specs: dict
    folders: dict
    eval: dict                      # run -> scores of its final model on the test seeds
    progress: dict                  # run -> what the job recorded (probe scores per checkpoint or round)
    losses: dict                    # run -> {t: {"planted": [...], "ordinary": [...]}}, final models
    thresholds: dict                # t -> M[t] / r of the full method's proxies at the end (mean, min, max)
    heldout_real: dict              # the memorization score of real held-out digits (the floor)
    frechet_floor: float
    mem_threshold: float            # the memorization ratio threshold in use
    samples: dict = field(default_factory=dict, repr=False)   # run -> first samples, for the grid
    nearest: dict = field(default_factory=dict, repr=False)   # run -> their nearest training digits

    def runs(self, kind: str) -> list[str]:
        return [n for n in self.specs if n.rsplit("-s", 1)[0] == kind]

    def to_metrics(self) -> dict:
        return metrics(self)


def _load(folder, spec) -> torch.nn.Module:
    unet = make_unconditional_unet(model_config(spec))
    load_weights(folder / "final", unet)
    return unet.eval()


def _samples(unet, cfg: IETAGCStudyConfig) -> np.ndarray:
    key = {"what": "ietagc-eval", "weights": weights_fingerprint(unet), "seeds": [EVAL_SEED, cfg.eval_samples],
           "steps": cfg.sample_steps}
    seeds = range(EVAL_SEED, EVAL_SEED + cfg.eval_samples)
    return cached_arrays("ietagc", key, lambda: {"x": sample_unconditional(unet, seeds, cfg.sample_steps).numpy()})["x"]


def run_ietagc_study(cfg: IETAGCStudyConfig) -> IETAGCResult:
    plan = cfg.plan()
    specs = plan.specs()
    folders = {}
    for name, spec in specs.items():
        folder = run_folder(name, spec)
        if cfg.retrain and folder.exists():
            set_aside(folder, f"retrain=True: training {name} again")
        if not finished(folder):
            print(f"[ietagc] {name} has no finished run in {folder.name}: training it ({cfg.ranks} ranks)")
        folders[name] = launch(name, spec, cfg.ranks)
    data = make_digits_data(DigitsDataConfig(**specs[next(iter(specs))]["data"]))
    scorer = DigitsScorer(data, seed=cfg.seed)
    first = [n for n in specs if n.startswith("full")][0]
    tau = cfg.mem_threshold or scorer.calibrated_threshold(cfg.mem_heldout_share)
    heldout = dict(scorer.memorization(data.heldout_images, cfg.seed, tau), n=len(data.heldout_images))
    res = IETAGCResult(specs, {k: v.name for k, v in folders.items()}, {}, {}, {}, {}, heldout, scorer.floor, tau)
    for name, spec in specs.items():
        unet = _load(folders[name], spec)
        x = torch.from_numpy(_samples(unet, cfg))
        s = scorer.score(x, seed=cfg.seed)
        s.update(scorer.memorization(x, cfg.seed, tau))
        res.eval[name] = s
        res.progress[name] = read_progress(folders[name])
        if name in (first, [n for n in specs if n.startswith("baseline")][0]):
            res.losses[name] = row_losses(unet, data, n_noise=cfg.loss_noises, seed=cfg.seed)
        res.samples[name] = x[:16]
        res.nearest[name] = scorer.unique[_nearest(scorer, x[:16])]
    last = res.progress[first][max(k for k in res.progress[first] if k.startswith("round-"))]
    bank = torch.tensor(last["bank"])
    r = specs[first]["iet"].get("agc_r", 2.0)
    for t in res.losses[first]:
        win = bank[:, max(0, int(t) - 10):int(t) + 11].mean(1) / r
        res.thresholds[t] = {"mean": float(win.mean()), "min": float(win.min()), "max": float(win.max())}
    return res


def _nearest(scorer: DigitsScorer, x: torch.Tensor) -> np.ndarray:
    d = torch.cdist(x.flatten(1).float(), scorer.unique.flatten(1).float())
    return d.argmin(1).numpy()
