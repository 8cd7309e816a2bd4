"""Notebook 05: PRSS (Chen et al., CVPR 2025) against Wen's PE, AMG and the augmentation baselines on one harness.

0. Cheap check (dev half): the first-step magnitude of each prompt, of its best trigger-keeping rewrite and of
   its best trigger-dropping one. The model keys a planted image on its trigger, so rewrites that keep it may
   stay as high as the prompt (then only re-anchoring can act).
1. Calibration (dev half, ``memlib.prss.curves``): the lambda sweep, tau_t and M_t; for PR alone and PRSS (each
   candidate source) the operating lambda, chosen on dev verbatim replication (the paper's pixel criterion).
2. Curves (test half): PE, PR alone (PE + PR, as the released code runs it), SS alone and PRSS at every lambda,
   with the default (trigger-keeping) candidates and, optionally, candidates that may drop the trigger, and the
   content-caption reference (the chance level of nearest-is-planted). AMG's and the baselines' rows come from
   notebooks 04's and 03's committed runs (same prompts, noises and columns).
3. Further testbed seeds (``more_testbed_seeds``, ``memlib.prss.seeds``): the main seed's operating points
   transferred, PRSS's own dev-chosen point, no mitigation and the content-caption reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backends.testbed import TestbedBackend
from ..cache import cached_arrays, weights_fingerprint
from ..claims import Claim
from ..config import Config, ConfigError, check_range, parse_number_list
from ..device import ComputeParams, compute_tag
from ..generation import GenerationConfig
from ..mitigate.columns import Evaluator, prompt_units
from ..mitigate.evalset import cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.run import run_content_reference, run_method
from ..paired_bootstrap import paired_difference
from ..testbed.build import TestbedRef
from .curves import calibrate, curve_method, curve_specs, dev_operating
from .methods import (CALIBRATION_BATCH, CALIBRATION_GENS, CALIBRATION_SEED, M_PERCENTILE, PER_STEP_THRESHOLDS,
                      TAU_PERCENTILE)
from . import report
from .paraphrase import TestbedParaphraser, split_testbed_prompt
from .results import PRSSResult, committed_references
from .search import candidate_magnitudes
from .seeds import run_seed

SOURCES = ("testbed", "testbed-drop-trigger")
ROW_COLUMNS = ["copy_rate_memorized", "replication_memorized", "replication_verbatim", "replication_image_dup",
               "replication_caption_dup", "nn_is_planted_memorized", "similarity_mean_memorized",
               "clip_phrasings_memorized", "clip_content_memorized", "clip_phrasings_heldout", "clip_content_heldout",
               "acted_heldout", "evals_per_image"]


@dataclass
class PRSSStudyConfig(ComputeParams, Config):
    """Parameters of notebooks/05_prss.ipynb."""
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    n_gens: int = CALIBRATION_GENS   # generations per prompt (as notebooks 03 and 04, so rows compare)
    num_steps: int = 25              # DDIM steps (as notebooks 03 and 04)
    guidance_scale: float = 3.0      # CFG scale w
    gen_batch_size: int = CALIBRATION_BATCH
    seed: int = CALIBRATION_SEED
    max_prompts_per_group: int = 0   # cap per group and half (0: all)
    heldout_prompts: int = 16        # held-out prompts per half (as notebooks 03 and 04)
    lambda_points: int = 5           # lambda values from the memorized to the held-out dev median (notebook 03's)
    source: str = "testbed"          # SS candidates: 'testbed' keeps the trigger (the paper keeps named entities)
    drop_trigger_curves: bool = True   # also SS and PRSS with candidates that may drop the trigger
    tau_percentile: float = TAU_PERCENTILE   # PR: plain CFG below this percentile of held-out per-step magnitudes
    m_percentile: float = M_PERCENTILE       # PR: full re-anchoring at this percentile
    per_step_thresholds: bool = PER_STEP_THRESHOLDS   # tau and M per step (the held-out magnitude grows along sampling)
    dev_gens: int = 2                # generations per dev prompt when choosing the operating lambda
    verbatim_bar: float = 0.05       # operating lambda: dev verbatim replication at most this
    matched_levels: int = 4          # privacy (and utility) levels where PRSS and PE are compared
    grid_prompts: int = 6            # memorized test prompts in the rewrite grid
    more_testbed_seeds: str = "1"    # further testbeds (data + training seeds): transfer and own operating point
    chunk: int = 48
    progress: bool = True
    device: str = "auto"             # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"              # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("n_gens", self.n_gens, 1, 64)
        check_range("dev_gens", self.dev_gens, 1, 64)
        check_range("lambda_points", self.lambda_points, 2, 20)
        check_range("tau_percentile", self.tau_percentile, 50.0, 100.0)
        check_range("m_percentile", self.m_percentile, 50.0, 100.0)
        if not self.tau_percentile < self.m_percentile:
            raise ConfigError(f"tau_percentile ({self.tau_percentile}) must be below m_percentile "
                              f"({self.m_percentile})")
        check_range("verbatim_bar", self.verbatim_bar, 0.0, 1.0)
        check_range("matched_levels", self.matched_levels, 1, 20)
        check_range("grid_prompts", self.grid_prompts, 0, 32)
        check_range("heldout_prompts", self.heldout_prompts, 0)
        check_range("max_prompts_per_group", self.max_prompts_per_group, 0)
        check_range("chunk", self.chunk, 1)
        self.testbed_seeds()
        if self.source not in SOURCES:
            raise ConfigError(f"parameter 'source' = {self.source!r}: choose one of {list(SOURCES)} (a jsonl file "
                              "or a callable works through memlib.prss.methods.prss_method)")
        self.generation_config()

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.n_gens, batch_size=self.gen_batch_size, seed=self.seed)

    def testbed_seeds(self) -> list[int]:
        """The further testbed seeds (``more_testbed_seeds`` without the main ``testbed_seed``)."""
        more = parse_number_list("more_testbed_seeds", self.more_testbed_seeds, int, 0)
        if len(set(more)) < len(more):
            raise ConfigError(f"parameter 'more_testbed_seeds' = {self.more_testbed_seeds!r} lists a seed twice; "
                              "give each seed once")
        return [s for s in more if s != self.testbed.seed]


@dataclass
class PRSSStudyResult(PRSSResult):
    """Notebook 05's result: every curve point, the calibration and the per-step magnitudes (``PRSSResult``),
    judged by ``memlib.prss.report``."""

    def claims(self) -> list[Claim]:
        return report.claims(self.to_metrics())

    def rows_table(self) -> list[dict]:
        """One record per test-half run (the notebook's ``prss_rows`` table)."""
        return [{"label": label, **{c: r.to_metrics().get(c, float("nan")) for c in ROW_COLUMNS}}
                for label, r in self.rows.items()]


def candidate_check(backend, prompts, gen: GenerationConfig) -> dict:
    """Per group: the original's first-step magnitude, and the lowest among rewrites keeping / dropping the extra
    (trigger or style) word, each as median and 10th/90th percentiles over prompts (cached)."""
    key = {"what": "prss-candidate-check", "weights": weights_fingerprint(backend),
           "compute": compute_tag(backend), "gen": gen.to_dict(),
           "prompts": [p.text for p in prompts]}

    def compute():
        tab = candidate_magnitudes(backend, [p.text for p in prompts], TestbedParaphraser(drop_trigger=True), gen)
        out = {"original": [], "keep": [], "drop": []}
        for p, texts, m in zip(prompts, tab.texts, tab.magnitudes):
            extra = split_testbed_prompt(p.text)[1]
            keeps = np.array([bool(extra) and extra in t.split() for t in texts[1:]])
            out["original"].append(m[0])
            out["keep"].append(m[1:][keeps].min() if keeps.any() else np.nan)
            out["drop"].append(m[1:][~keeps].min() if (~keeps).any() else np.nan)
        return {k: np.array(v, np.float32) for k, v in out.items()}

    arr = cached_arrays("prss", key, compute)
    groups, units = np.array([p.group for p in prompts]), prompt_units(prompts)
    stats = {}
    for g in dict.fromkeys(groups):
        sel = groups == g
        stats[g] = {k: _spread(arr[k][sel]) for k in ("original", "keep", "drop")}
        both = sel & np.isfinite(arr["keep"])   # the best trigger-keeping rewrite against the prompt, paired
        stats[g]["keep_vs_original"] = (paired_difference(arr["original"][both], arr["keep"][both], units[both],
                                                          relative=True).to_dict() if both.any() else None)
    return {"per_group": stats, "arrays": {k: arr[k] for k in arr}, "groups": groups.tolist()}


def _spread(x) -> dict:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not x.size:
        return {"n": 0}
    return {"n": int(x.size), "median": float(np.median(x)), "p10": float(np.percentile(x, 10)),
            "p90": float(np.percentile(x, 90))}


def run_study(cfg: PRSSStudyConfig) -> PRSSStudyResult:
    """Everything notebook 05 reports: the cheap check and calibration (dev half), every curve and the
    content-caption reference (test half), then the further testbed seeds."""
    tb = cfg.testbed.load(progress=cfg.progress, device=cfg.compute().device)
    clip = cfg.testbed.load_clip(tb, progress=cfg.progress, device=cfg.compute().device)
    backend, data = TestbedBackend(tb.model, tb, cfg.compute().dtype), tb.data
    gen = cfg.generation_config()
    evaluator = Evaluator.for_testbed(cfg.testbed, tb, clip, seed=cfg.seed, progress=cfg.progress,
                                      device=cfg.compute().device)
    dev, test = (cap_heldout(evaluation_prompts(data, half, max_per_group=cfg.max_prompts_per_group),
                             cfg.heldout_prompts) for half in ("dev", "test"))

    def run(method, prompts, n_gens=None):
        return run_method(backend, method, prompts, evaluator, cfg.generation_config(n_gens), chunk=cfg.chunk,
                          progress=cfg.progress)

    # 0-1. the cheap check and the calibration, on the dev half
    check = candidate_check(backend, dev, gen)
    lambdas, tau, M, dev_mag = calibrate(backend, dev, gen, cfg)
    specs = curve_specs(cfg)
    dev_rows, operating = dev_operating(run, specs, dev, lambdas, tau, M, cfg)

    # 2. the curves and the content-caption reference on the test half
    runs = {"none": run(make_method("none"), test)}
    curves: dict[str, list[str]] = {}
    for curve, variant in specs:
        curves[curve] = []
        for lam in lambdas:
            label = f"{curve} (lambda={lam:g})"
            runs[label] = run(curve_method(curve, variant, lam, tau, M, cfg.source), test)
            curves[curve].append(label)
    content = run_content_reference(backend, test, evaluator, gen, chunk=cfg.chunk, progress=cfg.progress)

    # 3. further testbed seeds: the operating points transferred, and PRSS's own
    transfer = {curve: (lam, tau, M) for curve, lam in operating.items()}
    seeds = {s: run_seed(cfg, s, specs, transfer, gen) for s in cfg.testbed_seeds()}
    references = committed_references(cfg)
    dev_magnitudes = {g: dev_mag[np.array([p.group == g for p in dev])].tolist()
                      for g in dict.fromkeys(p.group for p in dev)}
    return PRSSStudyResult.from_runs(cfg, tb.folder.name, test, runs, curves, lambdas, operating, dev_rows, tau, M,
                                     check, dev_magnitudes, references, data, content=content.row, seeds=seeds)
