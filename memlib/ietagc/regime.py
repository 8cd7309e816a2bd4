"""Finding a regime where IET-AGC+'s parts can show an effect (notebook 06; Liu et al., ECCV 2024; Guan et al.,
arXiv 2502.09434).

In notebook 06's default setting IET alone already brings the memorization score below that of real unseen
digits, so AGC, MSR and TAA have nothing left to remove. This probe trains short grids of baseline and IET-alone
runs on *development* training seeds (never the seeds reported) that vary the copies per planted digit, the
local steps per round (through the rounds) and the shards, and scores each final model against the real held-out
digits. The regime is chosen by a rule fixed before looking (``choose``): IET alone must still copy clearly, its
independent copy rate and its memorization score each at least ``margin`` times the real held-out digits', with
the copy rate's interval above the real rate; among the points that pass, the one closest to the paper's
setting (most shards, then fewest local steps changed, then fewest copies) is taken.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_weights
from ..config import Config, ConfigError, check_range, parse_number_list
from ..mitigate.digits import DigitsScorer
from ..testbed.digits import DigitsDataConfig, make_digits_data
from ..testbed.model import make_unconditional_unet
from .launch import model_config
from .probe import sample_unconditional
from .runs import RunPlan, launch
from .underfit import UnderfitCheck

PROBE_EVAL_SEED = 300_000      # disjoint from the study's evaluation seeds (400,000 on)


@dataclass
class RegimeProbeConfig(Config):
    """The probe grid: every (copies, shards, rounds) point trains IET alone; every copies value one baseline."""
    steps: int = 3000              # baseline optimizer steps; IET matches its sample visits
    batch_size: int = 128
    copies: str = "30,100"         # rows per planted digit
    shards: str = "2,4"            # K
    rounds: str = "10,30"          # R: local steps per round = steps / (K x R)
    dev_seed: int = 100            # a training seed no reported run uses
    ranks: int = 2                 # torchrun processes for the IET runs
    eval_samples: int = 1000
    sample_steps: int = 50
    mem_heldout_share: float = 0.05
    margin: float = 2.0            # IET alone must copy at least this many times as often as real unseen digits
    seed: int = 0                  # bootstrap seed

    def grid(self) -> list[dict]:
        out = []
        for c in parse_number_list("copies", self.copies, lo=2, distinct=True):
            for k in parse_number_list("shards", self.shards, lo=2, distinct=True):
                for r in parse_number_list("rounds", self.rounds, lo=1, distinct=True):
                    if self.steps % (k * r):
                        raise ConfigError(f"steps = {self.steps} does not split into shards x rounds = {k} x {r}; "
                                          f"choose steps divisible by every K x R of the grid")
                    out.append({"copies": int(c), "shards": int(k), "rounds": int(r),
                                "local_steps": self.steps // (int(k) * int(r))})
        if not out:
            raise ConfigError("the probe grid is empty: give copies, shards and rounds")
        return out

    def validate(self) -> None:
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("eval_samples", self.eval_samples, 16)
        check_range("margin", self.margin, 1.0)
        self.grid()

    def plan(self, point: dict) -> RunPlan:
        return RunPlan(steps=self.steps, batch=self.batch_size, shards=point["shards"], rounds=point["rounds"],
                       seeds=(self.dev_seed,), copies=point["copies"], probe_samples=0, long_factor=1,
                       bigbatch=False, frontier_points=1)


def _evaluate(folder: Path, spec: dict, scorer: DigitsScorer, underfit: UnderfitCheck, tau: float,
              cfg: RegimeProbeConfig) -> dict:
    unet = make_unconditional_unet(model_config(spec))
    load_weights(folder / "final", unet)
    x = sample_unconditional(unet.eval(), range(PROBE_EVAL_SEED, PROBE_EVAL_SEED + cfg.eval_samples),
                             cfg.sample_steps)
    s = scorer.score(x, seed=cfg.seed)
    s.update(scorer.memorization(x, cfg.seed, tau))
    keep = ("copy_rate", "copy_rate_ci", "mem_score", "mem_score_ci", "gu_replication", "nn_is_planted",
            "frechet")
    return {**{k: s[k] for k in keep}, **underfit(x), "folder": folder.name}


def run_probe(cfg: RegimeProbeConfig, log=print) -> dict:
    """Train (or reuse) and score every grid run; the record ``choose`` reads."""
    grid, points, real = cfg.grid(), [], {}
    for copies in sorted({p["copies"] for p in grid}):
        data = make_digits_data(DigitsDataConfig(copies=copies))
        scorer = DigitsScorer.for_digits(data, seed=cfg.seed, progress=False)
        underfit = UnderfitCheck(data.heldout_images, scorer.unique)
        tau = scorer.calibrated_threshold(cfg.mem_heldout_share)
        held = scorer.score(data.heldout_images, seed=cfg.seed)
        held.update(scorer.memorization(data.heldout_images, cfg.seed, tau))
        real[str(copies)] = {"copy_rate": held["copy_rate"], "mem_score": held["mem_score"], "mem_threshold": tau}
        baseline = None
        for point in [p for p in grid if p["copies"] == copies]:
            specs = cfg.plan(point).specs()
            if baseline is None:
                name = f"baseline-s{cfg.dev_seed}"
                log(f"[regime] copies={copies}: baseline")
                baseline = _evaluate(launch(name, specs[name], ranks=1), specs[name], scorer, underfit, tau, cfg)
            name = f"iet-s{cfg.dev_seed}"
            log(f"[regime] copies={copies} shards={point['shards']} rounds={point['rounds']}: IET alone")
            iet = _evaluate(launch(name, specs[name], ranks=cfg.ranks), specs[name], scorer, underfit, tau, cfg)
            points.append({**point, "iet": iet, "baseline": baseline})
    record = {"config": cfg.to_dict(), "real_heldout": real, "points": points}
    record["chosen"] = choose(record, cfg.margin)
    return record


def qualifies(point: dict, real: dict, margin: float) -> bool:
    """IET alone still copies clearly: copy rate and memorization score at least ``margin`` x the real held-out
    digits', and the copy rate's interval above the real rate."""
    iet = point["iet"]
    return (iet["copy_rate"] >= margin * real["copy_rate"] and iet["mem_score"] >= margin * real["mem_score"]
            and iet["copy_rate_ci"][0] > real["copy_rate"])


def choose(record: dict, margin: float, paper_shards: int = 4, paper_rounds: int = 10) -> dict:
    """The grid point the rule picks, with ``why``; ``None`` as point when none qualifies (then say so)."""
    ok = [p for p in record["points"] if qualifies(p, record["real_heldout"][str(p["copies"])], margin)]
    if not ok:
        return {"point": None, "why": f"no grid point leaves IET alone copying {margin:g}x as often as real unseen "
                                      f"digits; widen the grid (more copies, fewer shards, fewer local steps)"}
    best = min(ok, key=lambda p: (-p["shards"], p["rounds"] != paper_rounds, p["copies"]))
    keys = ("copies", "shards", "rounds", "local_steps")
    return {"point": {k: best[k] for k in keys},
            "why": f"{len(ok)} of {len(record['points'])} grid points leave IET alone copying at least {margin:g}x "
                   f"as often as real unseen digits; the closest to the paper's K = {paper_shards} is taken"}


def write_record(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)



def probe_record_path() -> Path | None:
    """Where the checkout keeps the regime probe's record (None outside a checkout)."""
    from ..paths import checkout_root

    root = checkout_root()
    return root / "benchmarks" / "results" / "ietagc_regime_probe.json" if root else None


def parse_regime(text: str) -> dict | None:
    """A notebook's ``regime`` parameter: '' (none), 'probe' (the probe's choice, read later) or an explicit
    'copies:shards:rounds'; a one-line error otherwise."""
    text = text.strip()
    if text in ("", "probe"):
        return {"source": text} if text else None
    parts = text.split(":")
    try:
        copies, shards, rounds = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"parameter 'regime' = {text!r}: give '' (none), 'probe' (the regime probe's choice) or "
                          f"copies:shards:rounds such as '100:4:10'") from None
    for name, v, lo in (("copies", copies, 2), ("shards", shards, 2), ("rounds", rounds, 1)):
        if v < lo:
            raise ConfigError(f"parameter 'regime' = {text!r}: {name} must be at least {lo}")
    return {"source": "explicit", "copies": copies, "shards": shards, "rounds": rounds}


def regime_point(text: str, record_path: Path | None = None) -> tuple[dict | None, str]:
    """(the regime's copies, shards and rounds, or None; a sentence saying where it came from or why none)."""
    spec = parse_regime(text)
    if spec is None:
        return None, "no second regime asked for (regime = '')"
    if spec["source"] == "explicit":
        return {k: spec[k] for k in ("copies", "shards", "rounds")}, "given explicitly"
    path = record_path or probe_record_path()
    if path is None or not path.exists():
        return None, ("the regime probe has not run: `python benchmarks/ietagc_regime_probe.py` writes "
                      "benchmarks/results/ietagc_regime_probe.json")
    try:
        chosen = json.loads(path.read_text())["chosen"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path} is damaged: restore it (git checkout) or run the probe again"
    if not isinstance(chosen, dict) or chosen.get("point") is None:
        return None, f"the probe chose no regime: {chosen.get('why') if isinstance(chosen, dict) else chosen}"
    point = chosen["point"]
    return {k: int(point[k]) for k in ("copies", "shards", "rounds")}, f"chosen by the regime probe ({chosen['why']})"
