"""Notebook 01's experiment: Wen et al.'s detection table (steps x generations), ROC, per-step curves and the
Carlini tiled-l2 baseline, on the testbed or a Stable Diffusion backend. The maths is in ``memlib.wen.scores``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import Config, ConfigError, check_range
from ..generate import GenerationConfig
from ..metrics import roc
from ..schedule import first_step_alpha_bar
from ..testbed.build import TestbedRef
from .scores import STEP_SETTINGS, carlini_score, detection_sweep, time_setting, wen_score

PLANTED = ("verbatim", "image_dup", "caption_dup")
TESTBED_NEGATIVES = ("heldout", "random")

# The README's results table (``memlib results``): (metric key written by ``to_metrics``, what it is, target)
HEADLINES = [
    ("auc_first_step_1gen", "Wen AUC, first step, 1 generation (memorized vs held-out)", ">= 0.95"),
    ("tpr1fpr_first_step_1gen", "Wen TPR@1%FPR, first step, 1 generation", ">= 0.80"),
    ("ideal_auc_first_step", "ideal denoiser computed from the data, first-step AUC", "report"),
    ("vs_random_auc_first_step_1gen", "Wen AUC, first step, 1 generation vs random tokens", "report"),
    ("auc_all_steps_4gen", "Wen AUC, all steps, 4 generations", "report"),
    ("baseline_auc", "Carlini tiled-l2 baseline AUC", "report"),
]



@dataclass
class DetectionConfig(Config):
    """Parameters of notebooks/01_detection.ipynb."""
    backend: str = "testbed"            # 'testbed', 'tiny-sd' (random weights; tests) or an SD model id/folder
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    positive_groups: str = "measured"   # testbed: 'measured' (groups notebook 00 found memorized) or 'a,b'
    memorized_threshold: float = 0.5    # a planted group is memorized when this share of generations copy
    positives_file: str = "nemo"        # SD backend: jsonl in Wen's format ('caption' field) or 'nemo'
    negatives_file: str = "nemo"        # SD backend: jsonl or 'nemo' (vendored non-memorized LAION prompts)
    max_prompts: int = 0                # cap per prompt set (0: all)
    max_gens: int = 16                  # generations per prompt; the table uses 1, 4 and this many
    num_steps: int = 50                 # DDIM steps
    guidance_scale: float = 3.0         # CFG scale of the trajectory (Wen used 7.5 on SD)
    batch_size: int = 128               # images per model call
    timing_prompts: int = 32            # prompts timed per setting
    seed: int = 0                       # generation seed (initial noises)
    progress: bool = True

    def validate(self) -> None:
        check_range("max_gens", self.max_gens, 2, 256)
        check_range("num_steps", self.num_steps, 10, 1000)
        check_range("memorized_threshold", self.memorized_threshold, 0.0, 1.0)
        check_range("timing_prompts", self.timing_prompts, 1)
        check_range("max_prompts", self.max_prompts, 0)
        self.chosen_groups()

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.max_gens, batch_size=self.batch_size, seed=self.seed)

    def needs_measured_groups(self) -> bool:
        """Whether the positives are the groups notebook 00 measured as memorized (pass its replication rates)."""
        return self.backend == "testbed" and self.positive_groups == "measured"

    def chosen_groups(self) -> list[str] | None:
        """The planted groups named by ``positive_groups`` (None for 'measured')."""
        if self.positive_groups == "measured":
            return None
        groups = [g.strip() for g in self.positive_groups.split(",") if g.strip()]
        allowed = PLANTED + ("verbatim_knob",)
        if not groups or any(g not in allowed for g in groups):
            raise ConfigError(f"parameter 'positive_groups' = {self.positive_groups!r}: use 'measured' or a comma "
                              f"list of {allowed}")
        return groups


@dataclass
class DetectionSetup:
    backend: object
    cache_key: str
    prompt_sets: dict[str, list[str]]   # name -> prompts
    positives: list[str]                # names of positive sets (pooled = all of them)
    negatives: list[str]
    notes: list[str] = field(default_factory=list)
    ideal_scores: dict[str, np.ndarray] = field(default_factory=dict)   # testbed: ideal-denoiser first step


def _cap(xs: list, n: int) -> list:
    return xs[:n] if n else xs


def _positive_groups(cfg: DetectionConfig, replication_rates: dict[str, float] | None, notes: list[str]) -> list[str]:
    chosen = cfg.chosen_groups()
    if chosen is not None:
        return chosen
    if replication_rates is None:
        raise ValueError("positive_groups = 'measured' needs notebook 00's replication rates per planted group; "
                         "pass replication_rates (notebook 01 reads them from figures/00_testbed/metrics.json)")
    groups = [g for g in PLANTED if replication_rates.get(g, 0) >= cfg.memorized_threshold]
    for g in PLANTED:
        rate = replication_rates.get(g, float("nan"))
        verdict = "memorized -> positive" if g in groups else "NOT memorized -> left out of the positives"
        notes.append(f"{g}: notebook 00 measured replication {rate:.0%} ({verdict})")
    if not groups:
        raise RuntimeError("notebook 00 found no planted group memorized; nothing to detect (see its metrics)")
    return groups


def setup_detection(cfg: DetectionConfig, replication_rates: dict[str, float] | None = None) -> DetectionSetup:
    """The backend and the labelled prompt sets for ``cfg.backend``. ``replication_rates`` (planted group ->
    share of copying generations, from notebook 00) chooses the positives when ``positive_groups`` is 'measured'."""
    from ..backends import make_backend

    notes: list[str] = []
    if cfg.backend == "testbed":
        from .ideal import ideal_first_step_scores

        positives = _positive_groups(cfg, replication_rates, notes)
        backend = make_backend("testbed", cfg.testbed, progress=cfg.progress)
        data = backend.testbed.data
        groups = positives + list(TESTBED_NEGATIVES)
        prompts = {g: _cap(data.prompts_in(g), cfg.max_prompts) for g in groups}
        a = first_step_alpha_bar(backend.scheduler("ddim"), cfg.num_steps)
        ideal = {g: ideal_first_step_scores(data, prompts[g], a, seed=cfg.seed) for g in positives + ["heldout"]}
        return DetectionSetup(backend, backend.testbed.meta["sha256"],
                              {g: [p.text for p in prompts[g]] for g in groups},
                              positives, list(TESTBED_NEGATIVES), notes, ideal)
    from ..prompts import load_prompt_file

    sets = {"memorized": _cap(load_prompt_file(cfg.positives_file, "memorized"), cfg.max_prompts),
            "non_memorized": _cap(load_prompt_file(cfg.negatives_file, "non_memorized"), cfg.max_prompts)}
    backend = make_backend(cfg.backend, seed=cfg.seed)
    if cfg.backend == "tiny-sd":
        notes.append("tiny random-weight Stable Diffusion: a plumbing check, its numbers mean nothing")
    key = f"tiny-sd-{cfg.seed}" if cfg.backend == "tiny-sd" else cfg.backend
    return DetectionSetup(backend, key, sets, ["memorized"], ["non_memorized"], notes)


@dataclass
class DetectionResult:
    """Notebook 01's results: the headline numbers as fields, the table and per-prompt arrays behind the plots."""
    setup: DetectionSetup
    table: list[dict]                        # one row per (positives, negatives, steps, gens)
    text_norm: dict[str, np.ndarray]         # set -> (P, G, T)
    scores: dict[tuple, dict[str, np.ndarray]]   # (steps, gens) -> set -> (P,)
    baseline: dict[str, np.ndarray]          # set -> Carlini score (P,)
    timings: dict
    main_positives: str                      # 'pooled' or the one positive set
    auc_first_step_1gen: float               # Wen, first step, one generation, vs the first negative set
    tpr1fpr_first_step_1gen: float
    auc_all_steps_4gen: float
    tpr1fpr_all_steps_4gen: float
    baseline_auc: float                      # Carlini tiled l2 with max_gens generations
    baseline_tpr1fpr: float
    versus: dict[str, dict[str, float]]      # other negative sets -> {'auc_first_step_1gen', 'tpr1fpr_first_step_1gen'}
    ideal_auc_first_step: float | None = None      # testbed: an ideal denoiser from the data (a design check)
    ideal_tpr1fpr_first_step: float | None = None

    @property
    def hard_negatives(self) -> str:
        return self.setup.negatives[0]

    def cell(self, steps: str, gens: int, key: str, negatives: str | None = None) -> float:
        """One table entry for the main positives."""
        neg = negatives or self.hard_negatives
        return next(r[key] for r in self.table if r["positives"] == self.main_positives and r["negatives"] == neg
                    and r["steps"] == steps and r["gens"] == gens)

    def to_metrics(self) -> dict:
        m = {"positives": self.setup.positives, "hard_negatives": self.hard_negatives, "notes": self.setup.notes,
             "n_prompts": {n: len(v) for n, v in self.setup.prompt_sets.items()}, "table": self.table}
        for key in ("auc_first_step_1gen", "tpr1fpr_first_step_1gen", "auc_all_steps_4gen", "tpr1fpr_all_steps_4gen",
                    "baseline_auc", "baseline_tpr1fpr"):
            m[key] = getattr(self, key)
        if self.ideal_auc_first_step is not None:
            m.update(ideal_auc_first_step=self.ideal_auc_first_step,
                     ideal_tpr1fpr_first_step=self.ideal_tpr1fpr_first_step)
        for neg, v in self.versus.items():
            m.update({f"vs_{neg}_{k}": x for k, x in v.items()})
        return m


def _gens_settings(max_gens: int) -> list[int]:
    return sorted({1, min(4, max_gens), max_gens})


def run_detection(cfg: DetectionConfig, setup: DetectionSetup | None = None) -> DetectionResult:
    setup = setup or setup_detection(cfg)
    names = list(setup.prompt_sets)
    flat = [p for n in names for p in setup.prompt_sets[n]]
    t0 = time.perf_counter()
    sweep = detection_sweep(setup.backend, flat, cfg.generation_config(), setup.cache_key, progress=cfg.progress)
    sweep_s = time.perf_counter() - t0
    bounds = np.cumsum([0] + [len(setup.prompt_sets[n]) for n in names])
    part = {n: slice(bounds[i], bounds[i + 1]) for i, n in enumerate(names)}
    text_norm = {n: sweep["text_norm"][part[n]] for n in names}
    images = torch.from_numpy(sweep["images"])
    baseline = {n: carlini_score(images[part[n]] * 2 - 1) for n in names}

    pos_sets = [[p] for p in setup.positives] + ([setup.positives] if len(setup.positives) > 1 else [])
    scores, table = {}, []
    for steps_name, k in STEP_SETTINGS.items():
        for g in _gens_settings(cfg.max_gens):
            scores[(steps_name, g)] = {n: wen_score(text_norm[n], k, g) for n in names}
    for neg in setup.negatives:
        for pos in pos_sets:
            label = "+".join(pos) if len(pos) == 1 else "pooled"
            for (steps_name, g), sc in scores.items():
                r = roc(np.concatenate([sc[p] for p in pos]), sc[neg])
                table.append(dict(positives=label, negatives=neg, steps=steps_name, gens=g, auc=r.auc,
                                  tpr_at_1fpr=r.tpr_at_1fpr, accuracy=r.accuracy))
            r = roc(np.concatenate([baseline[p] for p in pos]), baseline[neg])
            table.append(dict(positives=label, negatives=neg, steps="baseline_tiled_l2", gens=cfg.max_gens,
                              auc=r.auc, tpr_at_1fpr=r.tpr_at_1fpr, accuracy=r.accuracy))

    timings = _time_settings(cfg, setup, flat)
    n_t = timings["timing_prompts"]
    t0 = time.perf_counter()
    carlini_score(images[:n_t] * 2 - 1)
    timings["baseline_tiled_l2_s_per_prompt"] += (time.perf_counter() - t0) / n_t
    timings["full_sweep_s"] = sweep_s
    main_pos = "pooled" if len(setup.positives) > 1 else setup.positives[0]

    def cell(steps, gens, key, neg=setup.negatives[0]):
        return next(r[key] for r in table if r["positives"] == main_pos and r["negatives"] == neg
                    and r["steps"] == steps and r["gens"] == gens)

    g4 = min(4, cfg.max_gens)
    ideal = {}
    if setup.ideal_scores:  # what an ideal denoiser would score on this data (a ceiling set by the data)
        r = roc(np.concatenate([setup.ideal_scores[p] for p in setup.positives]), setup.ideal_scores["heldout"])
        ideal = dict(ideal_auc_first_step=r.auc, ideal_tpr1fpr_first_step=r.tpr_at_1fpr)
    versus = {neg: {"auc_first_step_1gen": cell("first", 1, "auc", neg),
                    "tpr1fpr_first_step_1gen": cell("first", 1, "tpr_at_1fpr", neg)} for neg in setup.negatives[1:]}
    return DetectionResult(
        setup, table, text_norm, scores, baseline, timings, main_pos,
        auc_first_step_1gen=cell("first", 1, "auc"), tpr1fpr_first_step_1gen=cell("first", 1, "tpr_at_1fpr"),
        auc_all_steps_4gen=cell("all", g4, "auc"), tpr1fpr_all_steps_4gen=cell("all", g4, "tpr_at_1fpr"),
        baseline_auc=cell("baseline_tiled_l2", cfg.max_gens, "auc"),
        baseline_tpr1fpr=cell("baseline_tiled_l2", cfg.max_gens, "tpr_at_1fpr"), versus=versus, **ideal)


def _time_settings(cfg: DetectionConfig, setup: DetectionSetup, prompts: list[str]) -> dict:
    """Wall time per prompt of each (steps, gens) setting, measured on ``cfg.timing_prompts`` prompts."""
    sub = prompts[: cfg.timing_prompts]
    out = {}
    for steps_name, k in STEP_SETTINGS.items():
        for g in _gens_settings(cfg.max_gens):
            if k is None and g == cfg.max_gens:
                continue  # timed below with the baseline (same generation cost)
            sec = time_setting(setup.backend, sub, cfg.generation_config(g), k)
            out[f"{steps_name}_{g}gen_s_per_prompt"] = sec
    t0 = time.perf_counter()
    sec = time_setting(setup.backend, sub, cfg.generation_config(cfg.max_gens), None)
    out[f"all_{cfg.max_gens}gen_s_per_prompt"] = sec
    out["baseline_tiled_l2_s_per_prompt"] = sec  # the same generations, plus pairwise distances (added later)
    out["first_1gen_prompts_per_second"] = 1 / out["first_1gen_s_per_prompt"]
    out["timing_prompts"] = len(sub)
    out["timing_wall_s"] = time.perf_counter() - t0
    return out
