"""Notebook 04: Anti-Memorization Guidance (Chen, Liu, Xu, CVPR 2024) on the text testbed and on digits DDPMs.

0. Cheap checks (dev half): sigma_t of memorized against held-out trajectories per step (can a switch separate
   them?), replication at guidance 1 (the most despecification can do), and which y_N each rule picks.
1. Calibration (dev half): lambda_t fitted to the held-out trajectories (``calibrate_testbed``, as the registry's
   ``amg`` calibrates); the dissimilarity scale c3 and its schedule chosen on the dev memorized prompts: Main is
   the smallest c3 that brings pooled replication to ``rep_bar``, Strong the next value of the sweep.
2. Tables on the test half (the harness's columns, privacy judged by the independent copy detector beside the
   paper's pixel criterion): Table 1 (none, Main, Strong, the released code's gating, the released code's
   c1 = 13), Table 4 (each term and pair), Table 5 (switch always on, constant threshold at the time-varying one's
   held-out firing share), all at Main's c3; the content-caption reference (chance of nearest-is-planted); Wen's
   PE at notebook 03's operating point (the registry's ``wen_pe``) on the same prompts and noises; paired
   intervals of every row against no mitigation and of the ablations against Main (``privacy.compare``). Main's
   settings come from ``methods.main_settings`` and the parameters' defaults from ``methods``' Main constants:
   the registry's ``amg`` is this Main.
3. Main with sigma = the copy detector's descriptor cosine (Eq. 9's SSCD; ``descriptor_sigma``): lambda_t and c3
   chosen on the dev half as Main's, c3 by the copy rate it optimises; judged by the pixel and low-pass Gu ratios.
4. Further testbeds (``seeds``): Main transferred from seed 0 and at each seed's own dev-chosen c3.
5. Digits (Tables 2-3): unconditional and class-conditional, dissimilarity guidance only (``digits``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..backends.testbed import TestbedBackend
from ..cache import cached_arrays, weights_fingerprint
from ..config import Config, ConfigError, check_range, parse_number_list
from ..device import ComputeParams, compute_tag
from ..generation import GenerationConfig
from ..metrics import auc_and_tpr
from ..mitigate import baselines as _baselines  # noqa: F401  (registers "none" and "lower_guidance")
from ..mitigate.columns import Evaluator
from ..mitigate.evalset import MEMORIZED_GROUPS, cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.similarity import SimilarityIndex
from ..testbed.build import TestbedRef
from ..wen import methods as _wen_methods  # noqa: F401  (registers "wen_pe": notebook 03's operating point)
from .analysis import choose_c3, fired_share, matched_to_notebook_03, y_n_rules
from .calibrate import calibrate, heldout_sigma_traces, sigma_traces
from .descriptor_sigma import descriptor_calibration, descriptor_index, testbed_descriptor
from .guidance import TERMS
from .methods import C3_KNOB, MAIN_CALIBRATION, MAIN_PERCENTILE, main_settings
from .privacy import compare, compare_all
from .report_tables import CODE_C1_ROW, DESCRIPTOR_ROW, WEN_PE_ROW
from .result import AMGResult
from .runner import Runner

ABLATIONS = [("spe",), ("dup",), ("sim",), ("spe", "dup"), ("spe", "sim"), ("dup", "sim")]
CODE_C1 = 13.0   # the released SD code's despecification scale (s1 = clip(13 sigma, 0, 6.5) at s0 = 7.5)
SCALE_MAX = 1000.0   # c1, c2: above this s1 and s2 sit at their caps for any sigma_t above 0.002
MAIN = main_settings()
VS_MAIN = ("AMG Strong", "spe", "dup", "sim", "switch always on", "constant threshold", WEN_PE_ROW, DESCRIPTOR_ROW)

@dataclass
class AMGStudyConfig(ComputeParams, Config):
    """Parameters of notebooks/04_amg.ipynb."""
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    n_gens: int = 4                  # generations per prompt (as notebook 03, so rows compare)
    num_steps: int = MAIN_CALIBRATION.num_steps             # DDIM steps (as notebook 03)
    guidance_scale: float = MAIN_CALIBRATION.guidance_scale  # CFG scale s0
    gen_batch_size: int = MAIN_CALIBRATION.batch_size
    seed: int = MAIN_CALIBRATION.seed
    max_prompts_per_group: int = 0   # cap per group and half (0: all)
    heldout_prompts: int = 16        # held-out prompts per half in the tables (as notebook 03)
    calib_gens: int = MAIN_CALIBRATION.n_gens   # generations per dev prompt for the sigma_t traces (calibration)
    calib_percentile: float = MAIN_PERCENTILE  # lambda_t fitted to this percentile of held-out sigma_t per step
    c1: float = MAIN.c1              # despecification per unit sigma (s1 = clip(c1 sigma, 0, s0 - 1))
    c2: float = MAIN.c2              # deduplication per unit sigma (s2 = clip(c2 sigma, 0, s0 - 1 - s1))
    c3_sweep: str = ",".join(f"{v:g}" for v in C3_KNOB.sweep)   # dissimilarity scales tried on the dev half
    schedules: str = "code,constant"       # G_sim weight schedules tried on the dev half
    dev_gens: int = 2                # generations per dev prompt in the c3 sweep
    rep_bar: float = 0.02            # Main: the smallest c3 whose dev replication is at most this
    descriptor_sigma: bool = True    # also run Main with sigma = the copy detector's descriptor cosine
    more_testbed_seeds: str = "1"    # further testbeds: seed 0's Main transferred and their own dev c3 ('' for none)
    retrain: bool = False            # retrain the digits models instead of loading the shipped ones
    digits_train_steps: int = 3000   # digits DDPM training steps (batch 128; the shipped models)
    digits_samples: int = 1000       # samples per digits model and half (seeds split dev / test)
    digits_steps: int = 50           # DDIM steps for the digits models
    digits_c3_sweep: str = "1,3,10,30,100"
    digits_percentile: float = 99.0  # lambda_t of the digits: percentile of non-replicating dev trajectories
    digits_reduction: float = 0.8    # digits Main: the smallest c3 with this relative Gu reduction (dev seeds)
    grid_prompts: int = 6            # memorized test prompts in the sample grid
    chunk: int = 48
    progress: bool = True
    device: str = "auto"             # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"              # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        if self.max_prompts_per_group < 0:
            raise ConfigError(f"parameter 'max_prompts_per_group' = {self.max_prompts_per_group}: give 0 (every "
                              "prompt) or a cap of at least 1 per group and half")
        for name in ("c1", "c2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= SCALE_MAX):
                raise ConfigError(f"parameter {name!r} = {v!r}: give a finite scale in [0, {SCALE_MAX:g}] (the "
                                  f"released code's c1 is 13; above {SCALE_MAX:g} the term sits at its cap)")
        for name in ("chunk", "digits_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"parameter {name!r} = {getattr(self, name)}: give a positive number "
                                  f"({'prompts per cached chunk' if name == 'chunk' else 'DDIM steps'})")
        check_range("digits_steps", self.digits_steps, 1, 1000)
        check_range("n_gens", self.n_gens, 1, 64)
        check_range("calib_gens", self.calib_gens, 1, 64)
        check_range("dev_gens", self.dev_gens, 1, 64)
        check_range("calib_percentile", self.calib_percentile, 50.0, 100.0)
        check_range("digits_percentile", self.digits_percentile, 50.0, 100.0)
        check_range("rep_bar", self.rep_bar, 0.0, 1.0)
        check_range("digits_reduction", self.digits_reduction, 0.0, 1.0)
        check_range("digits_samples", self.digits_samples, 20)
        check_range("digits_train_steps", self.digits_train_steps, 1)
        check_range("heldout_prompts", self.heldout_prompts, 0)
        check_range("grid_prompts", self.grid_prompts, 0, 32)
        for name in ("c3_sweep", "digits_c3_sweep"):
            self.sweep(name)
        bad = [s for s in self.schedule_names() if s not in ("code", "constant")]
        if bad or not self.schedule_names():
            raise ConfigError(f"parameter 'schedules' = {self.schedules!r}: choose from 'code', 'constant'")
        self.extra_seeds()
        self.generation_config()

    def sweep(self, name: str = "c3_sweep") -> list[float]:
        """A c3 sweep parameter: at least two positive scales, weakest first (Main is the smallest reaching the
        bar, Strong the next)."""
        text = getattr(self, name)
        vals = parse_number_list(name, text, float)
        if len(vals) < 2 or vals[0] <= 0 or any(b <= a for a, b in zip(vals, vals[1:])) or vals[-1] > C3_KNOB.hi:
            raise ConfigError(f"parameter {name!r} = {text!r}: give at least two positive scales up to "
                              f"{C3_KNOB.hi:g} in increasing order, e.g. '10,100'")
        return vals

    def extra_seeds(self) -> list[int]:
        """``more_testbed_seeds`` as integers, without ``testbed_seed`` (measured first) or repeats."""
        seeds = parse_number_list("more_testbed_seeds", self.more_testbed_seeds, int, 0)
        return [s for s in dict.fromkeys(seeds) if s != self.testbed.seed]

    def schedule_names(self) -> list[str]:
        return [s.strip() for s in self.schedules.split(",") if s.strip()]

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.n_gens, batch_size=self.gen_batch_size, seed=self.seed)


def _checks(cfg, backend, data, dev, index, run) -> dict:
    """sigma_t traces on the dev half (cached), the fitted lambda_t, guidance 1 and the y_N rules. The held-out
    traces and the fit are the registry's ``amg`` calibration (``heldout_sigma_traces``, ``calibrate``)."""
    import torch

    gen = cfg.generation_config(cfg.calib_gens)
    held = np.array([p.group == "heldout" for p in dev])
    sig_held, ts = heldout_sigma_traces(backend, gen, cfg.max_prompts_per_group, cfg.progress)
    cal = calibrate(sig_held, ts, cfg.calib_percentile)
    mem_texts = [p.text for p in dev if p.memorized]
    key = {"what": "amg-sigma-dev-memorized", "weights": weights_fingerprint(backend),
           "compute": compute_tag(backend), "gen": gen.to_dict(),
           "prompts": mem_texts}

    def compute():
        s, _, g = sigma_traces(backend, mem_texts, gen, index, progress=cfg.progress)
        return {"sigma": s, "images": g.images[:, 0].numpy()}

    mem = cached_arrays("amg", key, compute)
    if len(sig_held) != held.sum():
        raise RuntimeError("the held-out dev prompts of the calibration differ from the study's")
    sig = np.empty((len(dev),) + sig_held.shape[1:], sig_held.dtype)
    sig[held], sig[~held] = sig_held, mem["sigma"]
    auc = [auc_and_tpr(sig[~held, :, i].ravel(), sig[held, :, i].ravel())[0] for i in range(sig.shape[-1])]
    dev_mem = [p for p in dev if p.memorized]
    g1 = run(make_method("lower_guidance", 1.0), dev_mem, n_gens=cfg.dev_gens).row
    rules = y_n_rules(data, index, [p for p in dev if p.memorized], torch.from_numpy(mem["images"]) * 2 - 1)
    return {"cal": cal, "sigma": sig, "held": held, "groups": [p.group for p in dev], "auc_per_step": auc,
            "guidance_1": g1, "y_n_rules": rules}


def run_study(cfg: AMGStudyConfig) -> AMGResult:
    """Every experiment of notebook 04: the checks, the dev-half choices, the test-half tables, the descriptor
    sigma, the further testbeds and the digits."""
    tb = cfg.testbed.load(progress=cfg.progress, device=cfg.compute().device)
    clip = cfg.testbed.load_clip(tb, progress=cfg.progress, device=cfg.compute().device)
    backend, data = TestbedBackend(tb.model, tb, cfg.compute().dtype), tb.data
    evaluator = Evaluator.for_testbed(cfg.testbed, tb, clip, seed=cfg.seed, progress=cfg.progress,
                                      device=cfg.compute().device)
    index = SimilarityIndex(data.images)
    dev_all = evaluation_prompts(data, "dev", max_per_group=cfg.max_prompts_per_group)   # calibration: all held-out
    dev, test = cap_heldout(dev_all, cfg.heldout_prompts), cap_heldout(
        evaluation_prompts(data, "test", max_per_group=cfg.max_prompts_per_group), cfg.heldout_prompts)
    run = Runner(cfg, backend, evaluator)
    checks = _checks(cfg, backend, data, dev_all, index, run)
    cal: "Calibration" = checks["cal"]   # noqa: F821

    def settings(schedule, c3, **changes):
        return main_settings(schedule, c3, c1=cfg.c1, c2=cfg.c2, **changes)

    def amg(name, settings, threshold=cal.threshold):   # at the settings' own c3
        return run.amg(name, index, threshold, settings)

    # 1. c3 and schedule on the dev memorized prompts
    dev_mem = [p for p in dev if p.memorized]
    dev_none = run(make_method("none"), dev_mem, n_gens=cfg.dev_gens).row
    sweep = cfg.sweep()
    dev_rows = {s: [run(amg(f"amg[{s}]", settings(s, c)), dev_mem, cfg.dev_gens).row for c in sweep]
                for s in cfg.schedule_names()}
    main_schedule, main_c3, strong_c3 = choose_c3(dev_rows, sweep, cfg.rep_bar)
    main = settings(main_schedule, main_c3)

    # 2. the tables on the test half
    runs = {"none": run(make_method("none"), test, lowpass=True)}
    runs["AMG Main"] = run(amg("amg", main), test, lowpass=True)
    runs["AMG Strong"] = run(amg("amg", replace(main, c3=strong_c3)), test, lowpass=True)
    runs["AMG, released-code gating"] = run(amg("amg_code", replace(main, mode="code")), test, lowpass=True)
    runs[CODE_C1_ROW] = run(amg("amg_c1_13", replace(main, c1=CODE_C1)), test, lowpass=True)
    for terms in ABLATIONS:
        runs["+".join(terms)] = run(amg("amg_" + "+".join(terms), replace(main, terms=terms)), test, lowpass=True)
    runs["dup, y_N = top-k caption"] = run(amg("amg_dup_topk", replace(main, terms=("dup",), caption="topk")), test,
                                           lowpass=True)
    runs["switch always on"] = run(amg("amg_always", main, cal.always), test, lowpass=True)
    runs["constant threshold"] = run(amg("amg_constant", main, cal.constant), test, lowpass=True)
    runs[WEN_PE_ROW] = run(make_method("wen_pe"), test, lowpass=True)
    reference = run.content_reference(test)

    # 3. Main with the copy detector's descriptor as sigma
    descriptor = {}
    if cfg.descriptor_sigma:
        runs[DESCRIPTOR_ROW], descriptor = _descriptor_main(cfg, run, backend, data, dev_mem, test, main_schedule)

    # 4. further testbeds
    from .seeds import run_seed
    seeds = {}
    for s in cfg.extra_seeds():
        seeds[str(s)], seed_rows = run_seed(cfg, s, main_schedule, main_c3)
        run.rows += seed_rows

    from .digits_study import digits_scorer, run_digits
    scorer = digits_scorer(cfg)   # both digits models train on the same data: one scorer
    digits = {name: run_digits(cfg, class_conditional=cc, scorer=scorer) for name, cc in (("unconditional", False),
                                                                                          ("class-conditional", True))}
    rows = {label: r.row for label, r in runs.items()}
    if DESCRIPTOR_ROW in rows:   # b minus a: the descriptor sigma against the pixel sigma, same prompts and noises
        descriptor["paired_vs_pixel"] = compare(rows["AMG Main"], rows[DESCRIPTOR_ROW], seed=cfg.seed)
    result = AMGResult(
        config=cfg.to_dict(), checkpoint=tb.folder.name, calibration=cal.to_dict(),
        sigma_auc_per_step=checks["auc_per_step"], dev_sigma=checks["sigma"], dev_groups=checks["groups"],
        guidance_1=checks["guidance_1"].to_metrics(), y_n_rules=checks["y_n_rules"],
        dev_none=dev_none.to_metrics(),
        dev_sweep={s: [r.to_metrics() for r in rs] for s, rs in dev_rows.items()},
        main_schedule=main_schedule, main_c3=main_c3, strong_c3=strong_c3, rows=rows, reference=reference.row,
        paired_vs_none=compare_all(rows["none"], rows, seed=cfg.seed),
        paired_vs_main={k: compare(rows["AMG Main"], rows[k], seed=cfg.seed, by_group=k in TERMS)
                        for k in VS_MAIN if k in rows},
        descriptor=descriptor, seeds=seeds, copy_detector=evaluator.detector.name,
        traces={label: {k: runs[label].info[f"amg_{k}"] for k in ("sigma", "fired", "spe", "dup", "sim")}
                for label in ("AMG Main", "switch always on")},
        groups=[p.group for p in test], digits=digits, computed_rows=run.rows)
    result.siblings = _siblings(evaluator, test, runs["none"].images, runs["AMG Main"].images)
    result.grid = _grid(cfg, test, runs, data)
    result.matched = matched_to_notebook_03(result, cfg)
    return result


def _descriptor_main(cfg, run, backend, data, dev_mem, test, schedule):
    """(test run, metrics) of Main with sigma_t = the testbed copy detector's descriptor cosine: lambda_t fitted to
    descriptor sigma_t of the held-out dev trajectories, c3 the smallest of the sweep (at Main's schedule) whose
    dev copy rate reaches ``rep_bar``, as Main's c3 is chosen on the pixel criterion it optimises."""
    detector = testbed_descriptor(cfg.testbed, cfg.progress, backend.device)
    cal = descriptor_calibration(backend, detector, cfg.generation_config(cfg.calib_gens), cfg.calib_percentile,
                                 cfg.max_prompts_per_group, cfg.progress)
    index, net = descriptor_index(detector, data.images)

    def amg(c3):
        return run.amg("amg_descriptor", index, cal.threshold, main_settings(schedule, c3, c1=cfg.c1, c2=cfg.c2),
                       to_pixels=net, similarity="descriptor")

    sweep = cfg.sweep()
    dev_rows = [run(amg(c), dev_mem, cfg.dev_gens).row for c in sweep]
    _, c3, _ = choose_c3({schedule: dev_rows}, sweep, cfg.rep_bar, column="copy")
    test_run = run(amg(c3), test, lowpass=True)
    fired = test_run.info["amg_fired"]
    return test_run, {"detector": detector.name, "calibration": cal.to_dict(), "schedule": schedule, "c3": c3,
                      "chosen_by": "copy", "gamed_columns": ["copy_rate"],
                      "dev_sweep": [r.to_metrics() for r in dev_rows],
                      "switch_fired_heldout": fired_share(fired, [p.group for p in test]),
                      "switch_fired_memorized": fired_share(fired, [p.group for p in test], "memorized")}


def _siblings(evaluator, prompts, before, after) -> dict:
    """Per group: does guidance move a generation onto *another* row of its planted cluster (a sibling copy)?"""
    out = {}
    flat = lambda im: im.flatten(0, 1).float() * 2 - 1
    nb, na = evaluator.index.query(flat(before)), evaluator.index.query(flat(after))
    G = before.shape[1]
    planted = np.repeat([p.cluster for p in prompts], G)
    group = np.repeat([p.group for p in prompts], G)
    for g in MEMORIZED_GROUPS:
        s = group == g
        moved = s & (na.nn_cluster == planted) & (na.nn_index != nb.nn_index)
        out[g] = {"nn_in_cluster": float((na.nn_cluster[s] == planted[s]).mean()),
                  "moved_to_sibling": float(moved.sum() / max(s.sum(), 1)),
                  "sibling_ncc": float(na.copy_cosine[moved].mean()) if moved.any() else float("nan")}
    return out


def _grid(cfg, prompts, runs, data) -> dict:
    import torch
    idx = [i for i, p in enumerate(prompts) if p.memorized][:cfg.grid_prompts]
    labels = ["none", "AMG Main", "AMG Strong", "sim", "spe+dup"]
    imgs = {k: runs[k].images[idx, 0] for k in labels}
    nearest = {}
    for k in ("none", "AMG Main"):
        res = SimilarityIndex(data.images).topk_ncc(imgs[k].float() * 2 - 1, 1)[1][:, 0]
        nearest[k] = (data.images[res] + 1) / 2
    return {"captions": [prompts[i].text for i in idx], "rows": imgs, "nearest": nearest,
            "planted": (data.images[[int(np.flatnonzero(data.cluster == prompts[i].cluster)[0]) for i in idx]] + 1) / 2,
            "terms": TERMS, "shape": list(torch.as_tensor(imgs["none"]).shape)}
