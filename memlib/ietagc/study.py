"""Notebook 06: IET-AGC+ on the digits (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434).

The runs (``runs.RunPlan``: baseline, IET, +AGC, +MSR, +TAA = the full method, two seeds for the baseline and the
full method, a baseline trained twice as long, a large-batch baseline with IET's number of sequential steps) are
trained once by ``launch`` (torchrun) and ship; ``run_study`` launches any that are missing, then evaluates every
final model on the same test seeds: IET-AGC's memorization ratio (the share under the threshold is the
memorization score, counts at every threshold kept), Gu and planted replication, Fréchet distance of
digit-classifier features against held-out real digits. The memorization-fidelity frontier and the curves over
rounds come from what the jobs recorded while training (``probe``): every baseline checkpoint and every IET round
scored on the same probe seeds. No knob is tuned here: r, beta, kappa, A and p are the papers' defaults, so the
study has no dev half; probe and test seeds are disjoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache import cached_arrays, weights_fingerprint
from ..checkpoint import load_weights, set_aside
from ..claims import Claim
from ..config import Config, check_range, parse_number_list
from ..mitigate.digits import MQ_THRESHOLDS, DigitsScorer
from ..paths import checkout_root
from ..testbed.digits import DigitsDataConfig, make_digits_data
from ..testbed.model import make_unconditional_unet
from . import report
from .frontier import frontier_mem_at, pareto, probe_mem
from .launch import model_config
from .premise import row_losses
from .probe import read_progress, sample_unconditional
from .runs import RunPlan, finished, launch, run_folder

EVAL_SEED = 400_000
KINDS = ("baseline", "iet", "agc", "msr", "full", "long", "bigbatch")
# what each run's row in the metrics keeps of its final model's scores
KEYS = ("mem_score", "mem_score_ci", "mq_counts", "mq_ratio_median", "gu_replication", "gu_replication_ci",
        "planted_replication", "nn_is_planted", "frechet", "frechet_floor")


@dataclass
class IETAGCStudyConfig(Config):
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
    """What ``run_study`` returns: each run's spec, its final model's scores and what its job recorded, and the
    losses, skip thresholds and samples the figures draw; ``to_metrics()`` is what the notebook writes."""
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
    premise_before: dict = field(default_factory=dict)        # AGC's premise before the runs: {model: {t: ...}}

    def runs(self, kind: str) -> list[str]:
        return [n for n in self.specs if n.rsplit("-s", 1)[0] == kind]

    def kinds(self) -> dict[str, list[str]]:
        """kind (baseline, iet, agc, msr, full, long, bigbatch) -> its runs, in launch order."""
        return {k: self.runs(k) for k in KINDS}

    def to_metrics(self) -> dict:
        return _metrics(self)

    def claims(self) -> list[Claim]:
        return report.claims(self.to_metrics())

    def tables(self) -> dict:
        """The tables and numbers of the results block (``report.values``), for the notebook to show."""
        return report.values(self.to_metrics())

    def run_rows(self) -> list[dict]:
        """One row per run (its scalar scores): the CSV beside the figures."""
        return report.run_rows(self.to_metrics())

    def premise_table(self) -> str:
        """AGC's premise before the runs (notebook 04's digits DDPM) and at each baseline's last checkpoint."""
        return report.premise_table({**self.premise_before, **report.last_premise(self.to_metrics())})


def _load(folder, spec) -> torch.nn.Module:
    unet = make_unconditional_unet(model_config(spec))
    load_weights(folder / "final", unet)
    return unet.eval()


def _samples(unet, cfg: IETAGCStudyConfig) -> np.ndarray:
    key = {"what": "ietagc-eval", "weights": weights_fingerprint(unet), "seeds": [EVAL_SEED, cfg.eval_samples],
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


def run_study(cfg: IETAGCStudyConfig) -> IETAGCResult:
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
    res = IETAGCResult(specs, {k: v.name for k, v in folders.items()}, {}, {}, {}, {}, heldout, scorer.floor, tau,
                       premise_before=_premise_before())
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


def _final(progress: dict) -> dict:
    return progress[max(progress)] if progress else {}


def _metrics(res: IETAGCResult) -> dict:
    """What ``write_metrics`` stores: the headline comparison (full method against the baseline, every seed), each
    component's step, the frontier test, rounds, AGC's premise during training, where the skips fell, TAA's work."""
    ev, specs, tau = res.eval, res.specs, res.mem_threshold
    kinds = res.kinds()
    mb = [ev[n]["mem_score"] for n in kinds["baseline"]]
    mf = [ev[n]["mem_score"] for n in kinds["full"]]
    fb = [ev[n]["frechet"] for n in kinds["baseline"]]
    ff = [ev[n]["frechet"] for n in kinds["full"]]
    m = {"mem_score_baseline": float(np.mean(mb)), "mem_score_baseline_seeds": mb,
         "mem_score_full": float(np.mean(mf)), "mem_score_full_seeds": mf,
         "fd_baseline": float(np.mean(fb)), "fd_baseline_seeds": fb, "fd_full": float(np.mean(ff)), "fd_full_seeds": ff,
         "mem_reduction": 1 - float(np.mean(mf)) / float(np.mean(mb)) if np.mean(mb) > 0 else float("nan"),
         "fd_change": float(np.mean(ff)) / float(np.mean(fb)) - 1,
         "n_eval_samples": ev[kinds["baseline"][0]]["n"], "folders": res.folders,
         "mem_threshold": tau, "mem_score_heldout_real": res.heldout_real["mem_score"],
         "mq_counts_heldout_real": res.heldout_real["mq_counts"], "n_heldout_real": res.heldout_real["n"],
         "frechet_floor": res.frechet_floor}
    for k in ("gu_replication", "planted_replication"):
        m[f"{k}_baseline"] = float(np.mean([ev[n][k] for n in kinds["baseline"]]))
        m[f"{k}_full"] = float(np.mean([ev[n][k] for n in kinds["full"]]))
    comps = {}
    for kind, runs in kinds.items():
        for n in runs:
            spec, prog = specs[n], res.progress[n]
            last = _final(prog)
            comps[n] = {"label": report.LABELS[kind], **{k: ev[n][k] for k in KEYS if k in ev[n]},
                        "mem_score_at_one_third": ev[n]["mq_counts"]["0.333"] / ev[n]["n"],
                        "probe_visits": last.get("probe_visits"), "taa_visits": last.get("taa_visits", 0)}
    m["components"] = comps
    first = {k: v[0] for k, v in kinds.items() if v}
    order = [first[k] for k in ("baseline", "iet", "agc", "msr", "full") if k in first]
    if "iet" in first and "full" in first and "baseline" in first:
        drop = ev[first["baseline"]]["mem_score"] - ev[first["full"]]["mem_score"]
        m["iet_share_of_reduction"] = (ev[first["baseline"]]["mem_score"] - ev[first["iet"]]["mem_score"]) / drop \
            if drop > 0 else float("nan")
    m["component_steps"] = [{"from": a, "to": b, "mem_score_change": ev[b]["mem_score"] - ev[a]["mem_score"],
                             "frechet_change": ev[b]["frechet"] - ev[a]["frechet"]} for a, b in zip(order, order[1:])]
    # the frontier: every baseline checkpoint's probe (all seeds and the long run), same probe seeds as the rounds
    n_probe = {n: spec["probe"]["n_samples"] for n, spec in specs.items()}
    points = [{"run": n, "step": v["step"], "visits": v["probe_visits"], "mem_score": probe_mem(v, tau, n_probe[n]),
               "frechet": v["frechet"], "gu_replication": v["gu_replication"]}
              for n in kinds["baseline"] + kinds["long"] for v in res.progress[n].values()]
    front = pareto(points)
    m["frontier_points"], m["frontier"] = points, [p["run"] + f"@{p['step']}" for p in front]
    below = {}
    for n in kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]:
        last = _final(res.progress[n])
        at = frontier_mem_at(last["frechet"], front)
        mem = probe_mem(last, tau, n_probe[n])
        below[n] = {"probe_mem_score": mem, "probe_frechet": last["frechet"], "frontier_mem_score": at,
                    "below": bool(mem < at)}
    m["frontier_test"] = below
    # the control for IET itself: as many sequential optimizer steps as a proxy, on all rows, at the same visits
    m["control_points"] = [{"run": n, "step": v["step"], "visits": v["probe_visits"],
                            "mem_score": probe_mem(v, tau, n_probe[n]), "frechet": v["frechet"],
                            "gu_replication": v["gu_replication"]}
                           for n in kinds["bigbatch"] for v in res.progress[n].values()]
    if kinds["bigbatch"] and kinds["iet"]:
        b, i = kinds["bigbatch"][0], kinds["iet"][0]
        m["iet_vs_bigbatch"] = {"iet_mem_score": ev[i]["mem_score"], "bigbatch_mem_score": ev[b]["mem_score"],
                                "iet_frechet": ev[i]["frechet"], "bigbatch_frechet": ev[b]["frechet"],
                                "bigbatch_below_frontier": bool(
                                    m["control_points"][-1]["mem_score"]
                                    < frontier_mem_at(m["control_points"][-1]["frechet"], front))}
    m["below_frontier_share"] = float(np.mean([below[n]["below"] for n in kinds["full"]]))
    m["rounds"] = {n: [{"round": v["round"], "visits": v["probe_visits"], "mem_score": probe_mem(v, tau, n_probe[n]),
                        "frechet": v["frechet"], "gu_replication": v["gu_replication"],
                        "planted_replication": v["planted_replication"],
                        "skips_share_planted": v["skips_share_planted"]} for v in res.progress[n].values()]
                   for n in kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]}
    m["premise_during_training"] = {n: {str(v["step"]): v["premise"] for v in res.progress[n].values()}
                                    for n in kinds["baseline"]}
    m["premise_by_round"] = {n: {str(v["round"]): v["premise"] for v in res.progress[n].values()}
                             for n in kinds["iet"][:1] + kinds["full"][:1]}
    m["skips"] = {n: {k: _final(res.progress[n])[k] for k in ("skips_total", "skips_per_planted_row",
                                                               "skips_per_ordinary_row", "skips_share_planted")}
                  for n in kinds["agc"] + kinds["msr"] + kinds["full"]}
    finals = {n: _final(res.progress[n]) for n in kinds["full"]}
    m["taa"] = {n: {"extra_steps": int(sum(f["taa_steps"])), "extra_visits": f["taa_visits"],
                    "mean_magnitude": f["taa_mean_magnitude"]} for n, f in finals.items()}
    m["loss_vs_threshold"] = {}
    for t, thr in res.thresholds.items():
        full = res.losses[kinds["full"][0]][t]
        m["loss_vs_threshold"][str(t)] = {
            "threshold": thr, "planted_mean": float(np.mean(full["planted"])),
            "ordinary_mean": float(np.mean(full["ordinary"])),
            "planted_below": float(np.mean(np.array(full["planted"]) < thr["mean"])),
            "ordinary_below": float(np.mean(np.array(full["ordinary"]) < thr["mean"]))}
    m["acceptance"] = {"mem_reduction_at_least_0.40": bool(m["mem_reduction"] >= 0.40),
                       "fd_change_at_most_0.15": bool(m["fd_change"] <= 0.15),
                       "full_below_frontier": bool(m["below_frontier_share"] == 1.0)}
    m["acceptance"]["met"] = all(m["acceptance"].values())
    return m
