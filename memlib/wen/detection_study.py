"""Notebook 01's experiment: Wen et al.'s detection (ICLR 2024, Sec. 3.1) on the testbed or a Stable Diffusion
backend, to a reviewer's standard. The maths is in ``memlib.wen.scores``; results and pooling over testbed seeds
in ``memlib.wen.detection_results``; the README rows, tables and claims in ``memlib.wen.detection_report``.

On the testbed, per data+training seed:
- positives: the planted groups (verbatim, image duplication, caption duplication) that this run measures as
  memorized (Gu-ratio replication of their own generations >= ``memorized_threshold``);
- negatives by source, as Verma et al. table them: held-out compositional prompts, trained-but-not-memorized
  captions (the testbed's LAION) and random tokens (``memlib.testbed.sources``);
- every set split once into development and test halves by ``split_seed`` (``memlib.splits``); the table holds
  both, headlines read the test half, and nothing is chosen on it;
- dose-response: first-step score and replication against the number of training copies (the knob group);
- the best single sampling step, chosen on the development halves and reported on the test halves (first seed).
Positives, the dose group and held-out prompts are sampled over all steps (replication, Wen's all-steps
setting, Carlini's baseline); the other negatives only over the first ``EARLY_STEPS`` steps (their settings).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import Config, ConfigError, check_range, parse_number_list
from ..device import ComputeParams
from ..generation import GenerationConfig
from ..metrics import roc
from ..schedule import first_step_alpha_bar
from ..testbed.build import TestbedRef
from .detection_results import DetectionResult, SeedDetection, best_single_step, build_table, dose_response
from .scores import STEP_SETTINGS, carlini_score, detection_sweep, time_setting

PLANTED = ("verbatim", "image_dup", "caption_dup")
EARLY_STEPS = STEP_SETTINGS["first10"]   # steps sampled for negatives that need no all-steps setting


@dataclass
class DetectionConfig(ComputeParams, Config):
    """Parameters of notebooks/01_detection.ipynb."""
    backend: str = "testbed"            # 'testbed', 'tiny-sd' (random weights; tests) or an SD model id/folder
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    more_testbed_seeds: str = "1,2"     # further testbeds (data + training seeds) measured the same way
    positive_groups: str = "measured"   # testbed: 'measured' (planted groups this run finds memorized) or 'a,b'
    memorized_threshold: float = 0.5    # a planted group is memorized when this share of generations copy
    n_generic: int = 512                # trained-but-not-memorized captions (negatives)
    n_random: int = 256                 # random-token prompts (negatives)
    split_seed: int = 0                 # the dev/test split (memlib.splits)
    n_boot: int = 1000                  # bootstrap resamples for the intervals
    positives_file: str = "nemo"        # SD backend: jsonl in Wen's format ('caption' field) or 'nemo'
    negatives_file: str = "nemo"        # SD backend: jsonl or 'nemo' (vendored non-memorized LAION prompts)
    max_prompts: int = 0                # cap per prompt set (0: all)
    max_gens: int = 4                   # generations per prompt; the table uses 1 and this many
    num_steps: int = 50                 # DDIM steps
    guidance_scale: float = 3.0         # CFG scale of the trajectory (Wen used 7.5 on SD)
    batch_size: int = 128               # images per model call
    timing_prompts: int = 32            # prompts timed per setting
    seed: int = 0                       # generation seed (initial noises)
    progress: bool = True
    device: str = "auto"                # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"                 # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("max_gens", self.max_gens, 2, 256)
        check_range("guidance_scale", self.guidance_scale, 0.0, 100.0)   # beyond ~30 CFG only saturates
        check_range("batch_size", self.batch_size, 1, 65536)
        check_range("num_steps", self.num_steps, EARLY_STEPS, 1000)
        check_range("memorized_threshold", self.memorized_threshold, 0.0, 1.0)
        check_range("timing_prompts", self.timing_prompts, 1)
        check_range("max_prompts", self.max_prompts, 0)
        check_range("n_generic", self.n_generic, 1)
        check_range("n_random", self.n_random, 1)
        check_range("n_boot", self.n_boot, 10, 100000)
        self.chosen_groups()
        self.testbed_seeds()

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.max_gens, batch_size=self.batch_size, seed=self.seed)

    def testbed_seeds(self) -> list[int]:
        """The testbed seeds measured: ``testbed_seed`` first (its run draws the figures), then the others."""
        more = parse_number_list("more_testbed_seeds", self.more_testbed_seeds, int, 0, distinct=True)
        return list(dict.fromkeys([self.testbed.seed] + more)) if self.backend == "testbed" else [self.testbed.seed]

    def chosen_groups(self) -> list[str] | None:
        """The planted groups named by ``positive_groups`` (None for 'measured')."""
        if self.positive_groups == "measured":
            return None
        groups = [g.strip() for g in self.positive_groups.split(",") if g.strip()]
        if not groups or any(g not in PLANTED for g in groups):
            raise ConfigError(f"parameter 'positive_groups' = {self.positive_groups!r}: use 'measured' or a comma "
                              f"list of {PLANTED}")
        return groups


@dataclass
class PromptSet:
    """One labelled prompt set: its prompts, their split units and how far they are sampled."""
    name: str
    role: str                           # 'positive' (candidate), 'negative' or 'dose'
    prompts: list[str]
    units: list[str]                    # dev/test split units (memlib.splits)
    full: bool = True                   # sample all steps and keep images; else the first EARLY_STEPS only
    clusters: list[int] | None = None   # testbed planted cluster per prompt (replication)
    copies: list[int] | None = None     # training copies per prompt (dose-response)


@dataclass
class DetectionSetup:
    backend: object
    cache_key: str
    sets: dict[str, PromptSet]
    notes: list[str] = field(default_factory=list)
    ideal_scores: dict[str, np.ndarray] = field(default_factory=dict)   # testbed: ideal-denoiser first step
    seed: int = 0                                                       # testbed seed

    def names(self, role: str) -> list[str]:
        return [n for n, s in self.sets.items() if s.role == role]


def _cap(xs: list, n: int) -> list:
    return xs[:n] if n else xs


def _testbed_sets(cfg: DetectionConfig, data) -> dict[str, PromptSet]:
    from ..testbed.sources import negative_sources, split_unit

    def make(name, role, prompts, full=True):
        prompts = _cap(prompts, cfg.max_prompts)
        return PromptSet(name, role, [p.text for p in prompts], [split_unit(p) for p in prompts], full,
                         [p.cluster for p in prompts], [p.copies for p in prompts])

    sets = {g: make(g, "positive", data.prompts_in(g)) for g in PLANTED}
    dose = data.prompts_in("verbatim_knob") + data.prompts_in("verbatim")
    sets["dose"] = make("dose", "dose", dose)
    for src, prompts in negative_sources(data, cfg.n_random, cfg.n_generic).items():
        sets[src] = make(src, "negative", prompts, full=src == "heldout")
    return sets


def setup_detection(cfg: DetectionConfig, seed: int | None = None) -> DetectionSetup:
    """The backend and the labelled prompt sets for ``cfg.backend`` (the testbed of ``seed``, default
    ``cfg.testbed.seed``)."""
    from ..backends import make_backend

    if cfg.backend == "testbed":
        from dataclasses import replace

        from .ideal import ideal_first_step_scores

        seed = cfg.testbed.seed if seed is None else seed
        backend = make_backend("testbed", replace(cfg.testbed, seed=seed), progress=cfg.progress,
                           **cfg.backend_options())
        data = backend.testbed.data
        sets = _testbed_sets(cfg, data)
        a = first_step_alpha_bar(backend.scheduler("ddim"), cfg.num_steps)
        by_text = {p.text: p for p in data.prompts}
        ideal = {g: ideal_first_step_scores(data, [by_text[t] for t in sets[g].prompts], a, seed=cfg.seed)
                 for g in PLANTED}
        from ..testbed.sources import heldout_prompts
        ideal["heldout"] = ideal_first_step_scores(data, _cap(heldout_prompts(data), cfg.max_prompts), a,
                                                   seed=cfg.seed)
        return DetectionSetup(backend, backend.testbed.meta["sha256"], sets, [], ideal, seed)
    from ..prompts import load_prompt_file

    pos = _cap(load_prompt_file(cfg.positives_file, "memorized"), cfg.max_prompts)
    neg = _cap(load_prompt_file(cfg.negatives_file, "non_memorized"), cfg.max_prompts)
    sets = {"memorized": PromptSet("memorized", "positive", pos, [f"text:{p}" for p in pos]),
            "non_memorized": PromptSet("non_memorized", "negative", neg, [f"text:{p}" for p in neg])}
    backend = make_backend(cfg.backend, seed=cfg.seed, **cfg.backend_options())
    notes = ["tiny random-weight Stable Diffusion: a plumbing check, its numbers mean nothing"] \
        if cfg.backend == "tiny-sd" else []
    key = f"tiny-sd-{cfg.seed}" if cfg.backend == "tiny-sd" else cfg.backend
    return DetectionSetup(backend, key, sets, notes)


def _sweep(cfg: DetectionConfig, setup: DetectionSetup, full: bool) -> dict[str, dict[str, np.ndarray]]:
    """Sample every set with ``full`` as given, in one cached sweep; returns set -> arrays."""
    names = [n for n, s in setup.sets.items() if s.full == full and s.prompts]
    flat = [p for n in names for p in setup.sets[n].prompts]
    if not flat:
        return {}
    sw = detection_sweep(setup.backend, flat, cfg.generation_config(), setup.cache_key, progress=cfg.progress,
                         stop_after=None if full else EARLY_STEPS)
    bounds = np.cumsum([0] + [len(setup.sets[n].prompts) for n in names])
    return {n: {k: v[bounds[i]:bounds[i + 1]] for k, v in sw.items()} for i, n in enumerate(names)}


def _replication(setup: DetectionSetup, arrays: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Testbed: per prompt, the share of its generations that copy its planted image (Gu ratio, in-cluster);
    for a prompt with no planted image (held-out), the share that copy any training image (notebook 00's
    criterion, so its headline is measured on every seed here)."""
    if not hasattr(setup.backend, "testbed"):   # a real model: no training set to search
        return {}
    from ..metrics import ReplicationIndex

    data = setup.backend.testbed.data
    index = ReplicationIndex(data.images, data.cluster)
    out = {}
    for name, s in setup.sets.items():
        if s.clusters is None or name not in arrays or "images" not in arrays[name]:
            continue
        imgs = torch.from_numpy(arrays[name]["images"])
        P, G = imgs.shape[:2]
        res = index.query(imgs.flatten(0, 1) * 2 - 1)
        out[name] = res.replicated(np.repeat(s.clusters, G)).reshape(P, G).mean(1)
    return out


def run_study(cfg: DetectionConfig) -> DetectionResult:
    """Every testbed seed of ``cfg`` (one model on a Stable Diffusion backend), the settings timed once on the
    first; the best single step and the ideal-denoiser design check on the first seed."""
    seeds = []
    for i, seed in enumerate(cfg.testbed_seeds()):
        seeds.append(run_seed(cfg, setup_detection(cfg, seed), timings=i == 0))
    res = DetectionResult(seeds)
    main = res.main
    res.best_step = best_single_step(main, res.hard_negatives(), cfg.split_seed)
    ideal = main.setup.ideal_scores
    if ideal:   # an ideal denoiser computed from the data: a check of the data design, not a result
        res.ideal_auc = roc(np.concatenate([ideal[p] for p in main.positives]), ideal["heldout"]).auc
    return res


def run_seed(cfg: DetectionConfig, setup: DetectionSetup | None = None, timings: bool = True) -> SeedDetection:
    """One backend (one testbed seed): sweep, replication, positives, the dev/test table and dose-response."""
    setup = setup or setup_detection(cfg)
    t0 = time.perf_counter()
    arrays = {**_sweep(cfg, setup, True), **_sweep(cfg, setup, False)}
    sweep_s = time.perf_counter() - t0
    text_norm = {n: a["text_norm"] for n, a in arrays.items()}
    baseline = {n: carlini_score(torch.from_numpy(a["images"]) * 2 - 1) for n, a in arrays.items() if "images" in a}
    replication = _replication(setup, arrays)
    positives = _choose_positives(cfg, setup, replication)
    table = build_table(setup, text_norm, baseline, positives, cfg.max_gens, cfg.split_seed, cfg.n_boot)
    dose = dose_response(setup, text_norm, replication, cfg.split_seed, cfg.n_boot) if "dose" in setup.sets else []
    with_images = next((a["images"] for a in arrays.values() if "images" in a), None)
    t = _time_settings(cfg, setup, with_images) if timings else {}
    t["full_sweep_s"] = sweep_s
    return SeedDetection(setup.seed, setup, positives, text_norm, baseline,
                         {g: float(r.mean()) for g, r in replication.items()}, table, dose, t, cfg.max_gens)


def _choose_positives(cfg: DetectionConfig, setup: DetectionSetup, replication: dict[str, np.ndarray]) -> list[str]:
    candidates = setup.names("positive")
    chosen = cfg.chosen_groups() if cfg.backend == "testbed" else None
    if chosen is not None:
        return chosen
    if not replication:   # a real model: the positives file is the label
        return candidates
    groups = [g for g in candidates if g in replication and replication[g].mean() >= cfg.memorized_threshold]
    for g in candidates:
        rate = float(replication[g].mean()) if g in replication else float("nan")
        verdict = "memorized -> positive" if g in groups else "NOT memorized -> left out of the positives"
        setup.notes.append(f"seed {setup.seed}, {g}: replication {rate:.0%} of generations ({verdict})")
    if not groups:
        raise RuntimeError(f"testbed seed {setup.seed}: no planted group replicates in >= "
                           f"{cfg.memorized_threshold:.0%} of generations; nothing to detect")
    return groups


def _time_settings(cfg: DetectionConfig, setup: DetectionSetup, images: np.ndarray | None) -> dict:
    """Wall time per prompt of each (steps, gens) setting and of the tiled-l2 baseline, on ``timing_prompts``."""
    prompts = [p for s in setup.sets.values() for p in s.prompts][: cfg.timing_prompts]
    t0 = time.perf_counter()
    out = {}
    for steps_name, k in STEP_SETTINGS.items():
        for g in sorted({1, cfg.max_gens}):
            out[f"{steps_name}_{g}gen_s_per_prompt"] = time_setting(setup.backend, prompts, cfg.generation_config(g),
                                                                    k)
    # the baseline needs the same full generations, then compares them pairwise
    base_s = 0.0
    if images is not None:
        t1 = time.perf_counter()
        carlini_score(torch.from_numpy(images[: len(prompts)]) * 2 - 1)
        base_s = (time.perf_counter() - t1) / min(len(prompts), len(images))
    out["baseline_tiled_l2_s_per_prompt"] = out[f"all_{cfg.max_gens}gen_s_per_prompt"] + base_s
    out["first_1gen_prompts_per_second"] = 1 / out["first_1gen_s_per_prompt"]
    out["timing_prompts"] = len(prompts)
    out["timing_wall_s"] = time.perf_counter() - t0
    return out
