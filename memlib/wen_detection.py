"""Notebook 01's experiment: Wen et al.'s detection table (steps x generations), ROC, per-step curves and the
Carlini tiled-l2 baseline, on the testbed or a Stable Diffusion backend. See ``memlib.detect`` for the maths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Config, ConfigError, check_range
from .detect import STEP_SETTINGS, carlini_score, detection_sweep, roc, time_setting, wen_score
from .generate import GenerationConfig

PLANTED = ("verbatim", "image_dup", "caption_dup")
TESTBED_NEGATIVES = ("heldout", "random")


@dataclass
class DetectionConfig(Config):
    """Parameters of notebooks/01_detection.ipynb."""
    backend: str = "testbed"            # 'testbed', 'tiny-sd' (random weights; tests) or an SD model id/folder
    data_preset: str = "default"        # testbed data preset (as in notebook 00)
    train_steps: int = 2800             # testbed checkpoint (as in notebook 00)
    clip_steps: int = 1500              # testbed CLIP, the source of its frozen text encoder (as in notebook 00)
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
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        check_range("max_gens", self.max_gens, 2, 256)
        check_range("num_steps", self.num_steps, 10, 1000)
        check_range("memorized_threshold", self.memorized_threshold, 0.0, 1.0)
        check_range("timing_prompts", self.timing_prompts, 1)
        check_range("max_prompts", self.max_prompts, 0)

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.max_gens, batch_size=self.batch_size, seed=self.seed)


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


def _measured_groups(cfg: DetectionConfig, notes: list[str]) -> list[str]:
    from .provenance import read_metrics

    if cfg.positive_groups != "measured":
        groups = [g.strip() for g in cfg.positive_groups.split(",") if g.strip()]
        bad = [g for g in groups if g not in PLANTED + ("verbatim_knob",)]
        if bad or not groups:
            raise ConfigError(f"parameter 'positive_groups' = {cfg.positive_groups!r}: use 'measured' or a comma "
                              f"list of {PLANTED + ('verbatim_knob',)}")
        return groups
    m = read_metrics("00_testbed")["metrics"]
    groups = [g for g in PLANTED if m.get(f"{g}_replication_rate", 0) >= cfg.memorized_threshold]
    for g in PLANTED:
        rate = m.get(f"{g}_replication_rate", float("nan"))
        verdict = "memorized -> positive" if g in groups else "NOT memorized -> left out of the positives"
        notes.append(f"{g}: notebook 00 measured replication {rate:.0%} ({verdict})")
    if not groups:
        raise RuntimeError("notebook 00 found no planted group memorized; nothing to detect (see its metrics)")
    return groups


def _first_step_alpha_bar(backend, num_steps: int) -> float:
    sched = backend.scheduler("ddim")
    sched.set_timesteps(num_steps)
    return float(sched.alphas_cumprod[int(sched.timesteps[0])])


def setup_detection(cfg: DetectionConfig) -> DetectionSetup:
    """The backend and the labelled prompt sets for ``cfg.backend``."""
    notes: list[str] = []
    if cfg.backend == "testbed":
        from .backend import TestbedBackend
        from .testbed import load_method_testbed
        from .testbed_eval import ideal_first_step_scores

        tb = load_method_testbed(cfg, progress=cfg.progress)
        positives = _measured_groups(cfg, notes)
        groups = positives + list(TESTBED_NEGATIVES)
        prompts = {g: _cap(tb.data.prompts_in(g), cfg.max_prompts) for g in groups}
        backend = TestbedBackend(tb.model)
        ideal = {g: ideal_first_step_scores(tb.data, prompts[g], _first_step_alpha_bar(backend, cfg.num_steps),
                                            seed=cfg.seed) for g in positives + ["heldout"]}
        return DetectionSetup(backend, tb.meta["sha256"], {g: [p.text for p in prompts[g]] for g in groups},
                              positives, list(TESTBED_NEGATIVES), notes, ideal)
    from .prompts import load_prompt_file
    from .real_models import StableDiffusionBackend

    if cfg.backend == "tiny-sd":
        backend, key = StableDiffusionBackend.tiny_random(seed=cfg.seed), f"tiny-sd-{cfg.seed}"
        notes.append("tiny random-weight Stable Diffusion: a plumbing check, its numbers mean nothing")
    else:
        backend, key = StableDiffusionBackend.from_pretrained(cfg.backend), cfg.backend
    sets = {"memorized": _cap(load_prompt_file(cfg.positives_file, "memorized"), cfg.max_prompts),
            "non_memorized": _cap(load_prompt_file(cfg.negatives_file, "non_memorized"), cfg.max_prompts)}
    return DetectionSetup(backend, key, sets, ["memorized"], ["non_memorized"], notes)


@dataclass
class DetectionResult:
    setup: DetectionSetup
    table: list[dict]                        # one row per (positives, negatives, steps, gens)
    text_norm: dict[str, np.ndarray]         # set -> (P, G, T)
    scores: dict[tuple, dict[str, np.ndarray]]   # (steps, gens) -> set -> (P,)
    baseline: dict[str, np.ndarray]          # set -> Carlini score (P,)
    metrics: dict
    timings: dict


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
    neg0 = setup.negatives[0]

    def cell(steps, gens, key, neg=neg0):
        return next(r[key] for r in table if r["positives"] == main_pos and r["negatives"] == neg
                    and r["steps"] == steps and r["gens"] == gens)

    m = {"positives": setup.positives, "hard_negatives": neg0, "notes": setup.notes,
         "auc_first_step_1gen": cell("first", 1, "auc"), "tpr1fpr_first_step_1gen": cell("first", 1, "tpr_at_1fpr"),
         "auc_all_steps_4gen": cell("all", min(4, cfg.max_gens), "auc"),
         "tpr1fpr_all_steps_4gen": cell("all", min(4, cfg.max_gens), "tpr_at_1fpr"),
         "baseline_auc": cell("baseline_tiled_l2", cfg.max_gens, "auc"),
         "baseline_tpr1fpr": cell("baseline_tiled_l2", cfg.max_gens, "tpr_at_1fpr"),
         "n_prompts": {n: len(v) for n, v in setup.prompt_sets.items()}, "table": table}
    if setup.ideal_scores:  # what an ideal denoiser would score on this data (a ceiling set by the data)
        ideal = setup.ideal_scores
        r = roc(np.concatenate([ideal[p] for p in setup.positives]), ideal["heldout"])
        m.update(ideal_auc_first_step=r.auc, ideal_tpr1fpr_first_step=r.tpr_at_1fpr)
    for neg in setup.negatives[1:]:
        m[f"vs_{neg}_auc_first_step_1gen"] = cell("first", 1, "auc", neg)
        m[f"vs_{neg}_tpr1fpr_first_step_1gen"] = cell("first", 1, "tpr_at_1fpr", neg)
    return DetectionResult(setup, table, text_norm, scores, baseline, m, timings)


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
