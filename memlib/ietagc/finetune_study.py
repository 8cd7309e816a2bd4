"""Scoring the fine-tuning analogue of IET-AGC+'s headline (Guan et al., arXiv 2502.09434; ``finetune``).

Every model generates from the same test prompts of the fine-tuning data's testbed (its memorized prompts, whose
planted images the fine-tuning set duplicates, and held-out prompts) with the same noises, and is scored by that
testbed's evaluator in the three privacy columns (``memlib.mitigate.columns``): the copy detector trained on the
fine-tuning data (the headline), the pixel Gu ratio, nearest-is-planted; plus every-phrasing CLIP and the Fréchet
distance against that testbed's renders. The papers' Stable Diffusion score is the 95th percentile of the SSCD
similarity between a generation and its nearest training image ("Sim-95pc", Somepalli et al. 2023); its analogue
here is the 95th percentile of the copy descriptor's cosine similarity. Rows: the base model before fine-tuning,
the data testbed's own model (trained on that data from scratch), and plain and IET-AGC fine-tuning per seed.
IET-AGC against plain fine-tuning is paired over the same prompts and noises (units: planted images), and the
relative reductions are the analogues of the paper's −46.7 %.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..backends.testbed import TestbedBackend
from ..checkpoint import load_weights
from ..config import Config, ConfigError, check_range, parse_number_list
from ..generation import GenerationConfig
from ..mitigate import baselines  # noqa: F401  (registers 'none', plain CFG)
from ..mitigate.columns import Evaluator, paired
from ..mitigate.evalset import MEMORIZED_GROUPS, cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.run import run_method
from ..testbed.build import TestbedRef
from .finetune import finetune_specs
from .runs import launch

ROW_KEYS = ("copy_rate_memorized", "copy_rate_ci_memorized", "replication_memorized", "replication_ci_memorized",
            "nn_is_planted_memorized", "clip_phrasings_memorized", "clip_phrasings_heldout", "frechet_heldout",
            "frechet_floor_heldout", "copy_rate_heldout")


@dataclass
class FinetuneConfig(Config):
    """The fine-tuning analogue's sizes (chosen for 2 CPU cores: about half an hour per seed)."""
    testbed_preset: str = "default"
    testbed_train_steps: int = 2800   # of the two shipped testbeds (their checkpoints' names)
    testbed_clip_steps: int = 1500
    testbed_batch_size: int = 64
    base_seed: int = 0             # the shipped testbed that is fine-tuned
    data_seed: int = 1             # the testbed whose training data (its own planted duplicates) it is tuned on
    steps: int = 600               # optimizer steps at batch_size, each arm (equal sample visits)
    batch_size: int = 64
    lr: float = 2e-4               # a fine-tuning rate: a fifth of the testbed's own
    shards: int = 4                # K proxies of the IET-AGC arm
    rounds: int = 6                # R (steps split into K x R proxy rounds)
    seeds: str = "0"               # fine-tuning seeds (each trains both arms)
    ranks: int = 2                 # torchrun processes of the IET-AGC arm
    n_gens: int = 4
    num_steps: int = 25
    guidance_scale: float = 3.0
    max_prompts_per_group: int = 0
    heldout_prompts: int = 16
    seed: int = 0                  # bootstrap seed

    def seed_list(self) -> list[int]:
        seeds = parse_number_list("finetune_seeds", self.seeds, lo=0, distinct=True)
        if not seeds:
            raise ConfigError("parameter 'finetune_seeds' is empty: give at least one fine-tuning seed")
        return seeds

    def validate(self) -> None:
        if self.base_seed == self.data_seed:
            raise ConfigError("the fine-tuning data must come from another testbed than the base model: give "
                              "different base and data seeds")
        for name in ("steps", "batch_size", "shards", "rounds", "ranks", "n_gens", "num_steps"):
            check_range(name, getattr(self, name), 1)
        check_range("lr", self.lr, 1e-7, 1.0)
        if self.steps % (self.shards * self.rounds):
            raise ConfigError(f"parameter 'finetune_steps' = {self.steps}: must split into shards x rounds = "
                              f"{self.shards * self.rounds} proxy rounds (equal sample visits)")
        self.seed_list()

    def refs(self) -> tuple[TestbedRef, TestbedRef]:
        sizes = dict(preset=self.testbed_preset, train_steps=self.testbed_train_steps,
                     clip_steps=self.testbed_clip_steps, batch_size=self.testbed_batch_size)
        return TestbedRef(**sizes, seed=self.base_seed), TestbedRef(**sizes, seed=self.data_seed)

    def specs(self) -> dict[str, dict]:
        base, data = self.refs()
        out = {}
        for s in self.seed_list():
            out.update(finetune_specs(base, data, self.steps, self.batch_size, self.lr, self.shards, self.rounds, s))
        return out


def _sim_p95(evaluator: Evaluator, run, prompts) -> float:
    """95th percentile, over memorized prompts' generations, of the copy descriptor's similarity to the nearest
    training image (the analogue of the papers' SSCD Sim-95pc)."""
    mem = np.array([p.group in MEMORIZED_GROUPS for p in prompts])
    flat = run.images[mem].flatten(0, 1).float() * 2 - 1
    sims = np.asarray(evaluator.detector.nearest(flat, evaluator.train_descriptors)[1], float)
    return float(np.percentile(sims, 95))


def run_finetune_study(cfg: FinetuneConfig, progress: bool = True) -> dict:
    """Train (or reuse) both arms per seed, score every model, and return the metrics block."""
    cfg.validate()
    base_ref, data_ref = cfg.refs()
    tb = data_ref.load(progress=progress)
    evaluator = Evaluator.for_testbed(data_ref, tb, data_ref.load_clip(tb, progress=progress), seed=cfg.seed,
                                      progress=progress)
    prompts = cap_heldout(evaluation_prompts(tb.data, "test", max_per_group=cfg.max_prompts_per_group),
                          cfg.heldout_prompts)
    gen = GenerationConfig(num_steps=cfg.num_steps, guidance_scale=cfg.guidance_scale, n_gens=cfg.n_gens)
    base = base_ref.load(progress=progress)
    none = make_method("none")
    runs = {"before": run_method(TestbedBackend(base.model, base), none, prompts, evaluator, gen, progress=progress),
            "data_testbed": run_method(TestbedBackend(tb.model, tb), none, prompts, evaluator, gen, progress=progress)}
    folders = {}
    for name, spec in cfg.specs().items():
        folders[name] = launch(name, spec, cfg.ranks if "iet" in spec else 1)
        model = copy.deepcopy(base.model)
        load_weights(folders[name] / "final", model)
        runs[name] = run_method(TestbedBackend(model, base), none, prompts, evaluator, gen, progress=progress)
    rows = {}
    for name, run in runs.items():
        m = run.row.to_metrics()
        rows[name] = {**{k: m.get(k) for k in ROW_KEYS}, "sim_p95": _sim_p95(evaluator, run, prompts)}
    comparisons = {}
    for s in cfg.seed_list():
        plain, iet = runs[f"ft-plain-s{s}"].row, runs[f"ft-ietagc-s{s}"].row
        comparisons[f"s{s}"] = {col: paired(plain, iet, col, seed=cfg.seed).to_dict()
                                for col in ("copy", "replication", "nn_planted", "clip_phrasings")}
    plain_copy = np.mean([rows[f"ft-plain-s{s}"]["copy_rate_memorized"] for s in cfg.seed_list()])
    iet_copy = np.mean([rows[f"ft-ietagc-s{s}"]["copy_rate_memorized"] for s in cfg.seed_list()])
    plain_sim = np.mean([rows[f"ft-plain-s{s}"]["sim_p95"] for s in cfg.seed_list()])
    iet_sim = np.mean([rows[f"ft-ietagc-s{s}"]["sim_p95"] for s in cfg.seed_list()])
    return {"setting": cfg.to_dict(), "folders": {n: f.name for n, f in folders.items()},
            "copy_detector": evaluator.detector.name, "n_prompts": runs["before"].row.n_prompts, "rows": rows,
            "paired_ietagc_minus_plain": comparisons,
            "copy_rate_reduction": float(1 - iet_copy / plain_copy) if plain_copy > 0 else float("nan"),
            "sim_p95_reduction": float(1 - iet_sim / plain_sim) if plain_sim > 0 else float("nan")}


def finetune_table(m: dict) -> str:
    """Every model of the fine-tuning analogue in the privacy columns, then IET-AGC minus plain per seed."""
    def f(v, fmt=".3f"):
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    def ci(v, c):
        return f(v) + (f" [{f(c[0])}, {f(c[1])}]" if c else "")

    labels = {"before": "base model, before fine-tuning", "data_testbed": "the data's own testbed (from scratch)"}
    rows = [f"| {labels.get(n, n)} | {ci(r['copy_rate_memorized'], r['copy_rate_ci_memorized'])} | "
            f"{ci(r['replication_memorized'], r['replication_ci_memorized'])} | {f(r['nn_is_planted_memorized'])} | "
            f"{f(r['sim_p95'])} | {f(r['clip_phrasings_heldout'])} | {f(r['frechet_heldout'], '.2f')} |"
            for n, r in m["rows"].items()]
    head = ("| model | copy rate [95 % CI] | pixel Gu replication [95 % CI] | nearest is planted | descriptor "
            "similarity, 95th percentile | held-out every-phrasing CLIP | held-out Fréchet |\n|---|---|---|---|---|---|---|")
    pairs = [f"| {s} | " + " | ".join(ci(d[c]["estimate"], d[c]["ci95"]) for c in ("copy", "replication",
                                                                                  "nn_planted", "clip_phrasings")) + " |"
             for s, d in m["paired_ietagc_minus_plain"].items()]
    return "\n".join([head, *rows, "", "| IET-AGC − plain (same prompts and noises) | copy rate | pixel Gu "
                      "replication | nearest is planted | every-phrasing CLIP |", "|---|---|---|---|---|", *pairs, "",
                      f"Relative reduction against plain fine-tuning: copy rate {f(m['copy_rate_reduction'], '.1%')}, "
                      f"descriptor similarity (95th percentile) {f(m['sim_p95_reduction'], '.1%')}."])
