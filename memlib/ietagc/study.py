"""Notebook 06: IET-AGC+ on the digits (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434).

The runs (``runs.RunPlan``: baseline, IET, +AGC, +MSR, +TAA = the full method, two seeds for the baseline and the
full method, a baseline trained twice as long, a large-batch baseline with IET's number of sequential steps) are
trained once by ``launch`` (torchrun) and ship; ``run_study`` launches any that are missing, then evaluates every
final model on the same test seeds in three privacy columns (``privacy``): (a) the papers' criterion, IET-AGC's
memorization ratio (the share under the threshold is the memorization score, counts at every threshold kept) and
Gu replication; (b) the independent copy detector's copy rate (the headline); (c) whether the nearest training row
is planted, beside the same share for real held-out digits; plus planted replication and the Fréchet distance of
digit-classifier features against held-out real digits. The memorization-fidelity frontier and the curves over
rounds come from what the jobs recorded while training (``probe``): every baseline checkpoint and every IET round
scored on the same probe seeds. No knob is tuned here: r, beta, kappa, A and p are the papers' defaults, so the
study has no dev half; probe and test seeds are disjoint.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..cache import cached_arrays, weights_fingerprint
from ..checkpoint import load_weights, set_aside
from ..claims import Claim
from ..config import Config, ConfigError, check_range, parse_number_list
from ..device import ComputeParams, compute_tag
from ..mitigate.digits import MQ_THRESHOLDS, DigitsScorer
from ..paths import checkout_root
from ..testbed.digits import DigitsDataConfig, make_digits_data
from ..testbed.model import make_unconditional_unet
from . import report
from .finetune_study import FinetuneConfig
from .launch import model_config
from .premise import row_losses
from .privacy import detector_record, sample_columns
from .probe import sample_unconditional
from .regime import parse_regime, regime_point
from .runs import RunPlan, checked_progress, code_changes, finished, launch, run_folder
from .summary import REFERENCE_KEYS, metrics
from .underfit import UnderfitCheck

EVAL_SEED = 400_000
KINDS = ("baseline", "iet", "agc", "msr", "full", "long", "bigbatch", "annealed")
# parameters that must be at least 1, and why (0 would train nothing, or make every loss or score empty)
POSITIVE = {"steps": "baseline optimizer steps", "batch_size": "samples per step",
            "probe_samples": "the frontier and the curves over rounds score that many samples per probe",
            "copies": "rows per planted digit, the digit itself included",
            "n_duplicated": "the planted digits are what the runs memorize",
            "loss_noises": "each row's loss averages over that many noises; 0 makes every loss 0",
            "long_factor": "1 trains no long baseline, 2 or more trains one with that many times the visits"}


@dataclass
class IETAGCStudyConfig(ComputeParams, Config):
    """Parameters of notebooks/06_ietagc.ipynb."""
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
    component_seeds: bool = False     # IET, +AGC, +MSR for every seed too (seed-level intervals for each step)
    budgets: str = ""                 # fractions of steps: baselines annealed to completion at each (a frontier)
    regime: str = ""                  # a second setting away from the floor: 'probe', 'copies:shards:rounds' or ''
    regime_seeds: str = "0,1,2"       # ... its training seeds (every component on each)
    regime_budgets: str = "0.25,0.5"  # ... its annealed baselines (fractions of steps)
    finetune: bool = False            # the fine-tuning analogue on the text testbed (memlib.ietagc.finetune)
    finetune_steps: int = 600         # ... optimizer steps of each arm at batch 64 (equal sample visits)
    finetune_seeds: str = "0"         # ... fine-tuning seeds (each trains both arms)
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
    retrain_other_code: bool = False  # train again the finished runs whose recorded training code differs
    seed: int = 0
    device: str = "auto"              # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"               # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def seed_list(self) -> list[int]:
        """``seeds`` as integers: at least one, none twice (a repeat would count one training run twice)."""
        seeds = parse_number_list("seeds", self.seeds, lo=0, distinct=True)
        if not seeds:
            raise ConfigError("parameter 'seeds' is empty; give at least one training seed, e.g. '0,1'")
        return seeds

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("ranks", self.ranks, 1, 64)
        self.seed_list()
        for name, why in POSITIVE.items():
            if getattr(self, name) < 1:
                raise ConfigError(f"parameter {name!r} = {getattr(self, name)!r}: give at least 1 ({why})")
        if self.max_images < 0:
            raise ConfigError(f"parameter 'max_images' = {self.max_images}: give 0 (all 1,797 digits) or how many "
                              f"of the first digits to keep")
        if not parse_number_list("block_out_channels", self.block_out_channels, lo=8):
            raise ConfigError("parameter 'block_out_channels' is empty: give the UNet's widths, e.g. '16,32'")
        check_range("eval_samples", self.eval_samples, 16)     # the sample grid shows 16
        check_range("sample_steps", self.sample_steps, 1, 1000)
        check_range("mem_heldout_share", self.mem_heldout_share, 0.0, 1.0)
        if self.mem_threshold and not any(abs(self.mem_threshold - t) < 1e-9 for t in MQ_THRESHOLDS):
            raise ValueError(f"parameter 'mem_threshold' = {self.mem_threshold}: give 0 (calibrated) or one of "
                             f"{[round(t, 3) for t in MQ_THRESHOLDS]} (the training probes count at those)")
        parse_regime(self.regime)
        check_range("finetune_steps", self.finetune_steps, 1, 10**7)
        self.finetune_config().validate()
        parse_number_list("regime_seeds", self.regime_seeds, lo=0, distinct=True)
        parse_number_list("regime_budgets", self.regime_budgets, kind=float, lo=0.01, distinct=True)
        self.plan()
        make_digits_data(self.data_config())      # too few digits for the planted ones: its error names the parameter

    def regime_config(self, record_path=None) -> tuple["IETAGCStudyConfig | None", str]:
        """The second setting (``regime``): these parameters with the regime's copies, shards and rounds, every
        component on each of ``regime_seeds`` and baselines annealed at ``regime_budgets``; or None and why."""
        point, why = regime_point(self.regime, record_path)
        if point is None:
            return None, why
        cfg = replace(self, **point, seeds=self.regime_seeds, component_seeds=True, budgets=self.regime_budgets,
                      bigbatch=False, regime="")
        if len(cfg.seed_list()) < 2:
            raise ConfigError(f"parameter 'regime_seeds' = {self.regime_seeds!r}: give at least 2 training seeds "
                              f"(the second setting's intervals go over seeds)")
        cfg.validate()
        return cfg, why

    def finetune_config(self) -> FinetuneConfig:
        """The fine-tuning analogue's settings: its own defaults, with this notebook's steps, seeds and ranks."""
        return FinetuneConfig(steps=self.finetune_steps, seeds=self.finetune_seeds, ranks=self.ranks)

    def data_config(self) -> DigitsDataConfig:
        return DigitsDataConfig(n_duplicated=self.n_duplicated, copies=self.copies, max_images=self.max_images)

    def plan(self) -> RunPlan:
        return RunPlan(steps=self.steps, batch=self.batch_size, shards=self.shards, rounds=self.rounds,
                       frontier_points=self.frontier_points,
                       seeds=tuple(self.seed_list()),
                       block_out_channels=tuple(parse_number_list("block_out_channels", self.block_out_channels,
                                                                  lo=8)),
                       n_duplicated=self.n_duplicated, copies=self.copies, max_images=self.max_images,
                       probe_samples=self.probe_samples, probe_steps=self.sample_steps,
                       probe_noises=self.loss_noises, long_factor=self.long_factor,
                       bigbatch=self.bigbatch, component_seeds=self.component_seeds,
                       budgets=tuple(parse_number_list("budgets", self.budgets, kind=float, lo=0.01,
                                                     distinct=True)))


@dataclass
class IETAGCResult:
    """What ``run_study`` returns: each run's spec, its final model's scores and what its job recorded, and the
    losses, skip thresholds and samples the figures draw; ``to_metrics()`` is what the notebook writes."""
    specs: dict
    folders: dict
    eval: dict                      # run -> scores of its final model on the test seeds
    progress: dict                  # run -> what the job recorded (probe scores per checkpoint or round)
    losses: dict                    # run -> {t: {"planted": [...], "ordinary": [...]}}, final models
    thresholds: dict                # t -> M[t] / r of the full method's proxies at the end (mean, min, max)
    heldout_real: dict              # real held-out digits' scores: the floor of (a) and (b), the chance of (c)
    frechet_floor: float
    mem_threshold: float            # the memorization ratio threshold in use
    samples: dict = field(default_factory=dict, repr=False)   # run -> first samples, for the grid
    nearest: dict = field(default_factory=dict, repr=False)   # run -> their nearest training digits
    premise_before: dict = field(default_factory=dict)        # AGC's premise before the runs: {model: {t: ...}}
    detector: dict = field(default_factory=dict)              # what the copy detector was trained and calibrated on
    seed: int = 0                                             # of the bootstrap intervals
    columns: dict = field(default_factory=dict, repr=False)   # run -> per-sample privacy columns, for pairing
    made_by_other_code: dict = field(default_factory=dict)    # run -> training files changed since it was made
    _metrics: dict | None = field(default=None, repr=False, compare=False)   # computed once (bootstraps)

    def runs(self, kind: str) -> list[str]:
        return [n for n in self.specs if report.run_kind(n) == kind]

    def kinds(self) -> dict[str, list[str]]:
        """kind (baseline, iet, agc, msr, full, long, bigbatch) -> its runs, in launch order."""
        return {k: self.runs(k) for k in KINDS}

    def to_metrics(self) -> dict:
        if self._metrics is None:
            self._metrics = metrics(self)
        return copy.deepcopy(self._metrics)

    def claims(self) -> list[Claim]:
        return report.claims(self.to_metrics())

    def tables(self) -> dict:
        """The tables and numbers of the results block (``report.values``), for the notebook to show."""
        return report.values(self.to_metrics())

    def run_rows(self) -> list[dict]:
        """One row per run (its scalar scores): the CSV beside the figures."""
        return report.run_rows(self.to_metrics())

    def frontier_rows(self) -> list[dict]:
        """Every baseline and control probe in its three privacy columns: the CSV beside the frontier figure."""
        return report.frontier_rows(self.to_metrics())

    def premise_table(self) -> str:
        """AGC's premise before the runs (notebook 04's digits DDPM) and at each baseline's last checkpoint."""
        return report.premise_table({**self.premise_before, **report.last_premise(self.to_metrics())})


def _load(folder, spec) -> torch.nn.Module:
    unet = make_unconditional_unet(model_config(spec))
    load_weights(folder / "final", unet)
    return unet.eval()


def _samples(unet, cfg: IETAGCStudyConfig) -> np.ndarray:
    key = {"what": "ietagc-eval", "weights": weights_fingerprint(unet),
           "compute": compute_tag(unet), "seeds": [EVAL_SEED, cfg.eval_samples],
           "steps": cfg.sample_steps}
    seeds = range(EVAL_SEED, EVAL_SEED + cfg.eval_samples)
    return cached_arrays("ietagc", key, lambda: {"x": sample_unconditional(unet, seeds, cfg.sample_steps).numpy()})["x"]


def _premise_before() -> dict:
    """AGC's premise as checked before any run, on notebook 04's digits DDPM (``benchmarks/ietagc_premise.py``)."""
    root = checkout_root()
    path = root / "benchmarks" / "results" / "ietagc_premise.json" if root else None
    if path is None or not path.exists():
        return {}
    b = json.loads(path.read_text())
    return {f"notebook 04's digits DDPM (`{b['checkpoint']}`), before the runs":
            {t: {"ratio": v["ratio"], "auc": v["auc_planted_lower"]} for t, v in b["per_timestep"].items()}}


def _launch_all(cfg: IETAGCStudyConfig, specs: dict) -> tuple[dict, dict]:
    """Each run's folder (trained where missing), and {run: training files changed since it was made} for the
    finished runs made by other training code that are used as they are."""
    folders, other_code, unrecorded = {}, {}, []
    for name, spec in specs.items():
        folder = run_folder(name, spec)
        changed = code_changes(folder) if finished(folder) else None
        if folder.exists() and (cfg.retrain or (changed and cfg.retrain_other_code)):
            why = "retrain=True" if cfg.retrain else f"made by other training code ({', '.join(changed)})"
            set_aside(folder, f"{why}: training {name} again")
            changed = None
        if not finished(folder):
            print(f"[ietagc] {name} has no finished run in {folder.name}: training it ({cfg.ranks} ranks)")
        folders[name] = launch(name, spec, cfg.ranks, device=str(cfg.compute().device))
        if changed:
            other_code[name] = changed
        elif changed is None and code_changes(folders[name]) is None:
            unrecorded.append(name)
    if other_code:
        print(f"[ietagc] WARNING: {len(other_code)} finished runs were made by other training code and are used as "
              f"they are: {', '.join(f'{n} ({len(c)} files changed: {c[0]} ...)' for n, c in other_code.items())}. "
              f"Set retrain_other_code = True to train them again with this code.")
    if unrecorded:
        print(f"[ietagc] note: {len(unrecorded)} runs predate the training-code record ({', '.join(unrecorded)}); "
              f"they are used as they are")
    return folders, other_code


def run_study(cfg: IETAGCStudyConfig) -> IETAGCResult:
    specs = cfg.plan().specs()
    data = make_digits_data(cfg.data_config())
    # the copy detector loads (or trains once) before any run trains: the runs' probes record its rate too
    scorer = DigitsScorer.for_digits(data, seed=cfg.seed, progress=True, device=cfg.compute().device)
    folders, other_code = _launch_all(cfg, specs)
    progress = {name: checked_progress(name, spec, folders[name]) for name, spec in specs.items()}
    first = [n for n in specs if n.startswith("full")][0]
    tau = cfg.mem_threshold or scorer.calibrated_threshold(cfg.mem_heldout_share)
    heldout = dict(scorer.memorization(data.heldout_images, cfg.seed, tau), n=len(data.heldout_images))
    real = scorer.score(data.heldout_images, seed=cfg.seed)
    heldout.update({k: real[k] for k in REFERENCE_KEYS})
    res = IETAGCResult(specs, {k: v.name for k, v in folders.items()}, {}, progress, {}, {}, heldout, scorer.floor,
                       tau, premise_before=_premise_before(), detector=detector_record(scorer, data), seed=cfg.seed,
                       made_by_other_code=other_code)
    res.columns["heldout_real"] = sample_columns(scorer, data.heldout_images, tau)
    underfit = UnderfitCheck(data.heldout_images, scorer.unique)
    res.heldout_real["underfit"] = underfit.reference()
    for name, spec in specs.items():
        unet = _load(folders[name], spec).to(cfg.compute().device)
        x = torch.from_numpy(_samples(unet, cfg))
        s = scorer.score(x, seed=cfg.seed)
        s.update(scorer.memorization(x, cfg.seed, tau))
        s.update(underfit(x, cfg.seed))
        res.eval[name] = s
        res.columns[name] = sample_columns(scorer, x, tau)
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
