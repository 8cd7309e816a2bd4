"""Notebook 04: Anti-Memorization Guidance (Chen, Liu, Xu, CVPR 2024) on the text testbed and on digits DDPMs.

0. Cheap checks (dev half): sigma_t of memorized against held-out trajectories per step (can a switch separate
   them?), replication at guidance 1 (the most despecification can do), and which y_N each rule picks.
1. Calibration (dev half): lambda_t fitted to the held-out trajectories (``calibrate_testbed``, as the registry's
   ``amg`` calibrates); the dissimilarity scale c3 and its schedule chosen on the dev memorized prompts: Main is
   the smallest c3 that brings pooled replication to ``rep_bar``, Strong the next value of the sweep.
2. Tables on the test half (the harness's columns): Table 1 (none, Main, Strong, the released code's gating, the
   released code's c1 = 13), Table 4 (each term and pair), Table 5 (switch always on, constant threshold at the
   time-varying one's held-out firing share), all at Main's c3. Main's settings come from
   ``methods.main_settings`` and the parameters' defaults from ``methods``' Main constants: the registry's
   ``amg`` is this Main.
3. Digits (Tables 2-3): unconditional and class-conditional, dissimilarity guidance only (``digits``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..backends.testbed import TestbedBackend
from ..cache import cached_arrays, weights_fingerprint
from ..claims import Claim
from ..config import Config, check_range, parse_number_list
from ..generation import GenerationConfig
from ..metrics import auc_and_tpr
from ..mitigate import baselines as _baselines  # noqa: F401  (registers "none" and "lower_guidance")
from ..mitigate.columns import Evaluator
from ..mitigate.evalset import MEMORIZED_GROUPS, cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.run import run_method
from ..mitigate.similarity import SimilarityIndex
from ..testbed.build import TestbedRef
from .analysis import choose_c3, matched_to_notebook_03, memorized_replication, y_n_rules
from .calibrate import calibrate, heldout_sigma_traces, sigma_traces
from .guidance import TERMS
from .methods import C3_KNOB, MAIN_CALIBRATION, MAIN_PERCENTILE, AMGSetup, amg_method, main_settings
from .report import CODE_C1_ROW, ablation_tests
from .report import claims as report_claims

ABLATIONS = [("spe",), ("dup",), ("sim",), ("spe", "dup"), ("spe", "sim"), ("dup", "sim")]
CODE_C1 = 13.0   # the released SD code's despecification scale (s1 = clip(13 sigma, 0, 6.5) at s0 = 7.5)
MAIN = main_settings()


@dataclass
class AMGStudyConfig(Config):
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

    def validate(self) -> None:
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
            vals = parse_number_list(name, getattr(self, name), float)
            if not vals or any(v <= 0 for v in vals):
                raise ValueError(f"parameter {name!r} = {getattr(self, name)!r}: give positive numbers, e.g. '10,100'")
        bad = [s for s in self.schedule_names() if s not in ("code", "constant")]
        if bad or not self.schedule_names():
            raise ValueError(f"parameter 'schedules' = {self.schedules!r}: choose from 'code', 'constant'")
        self.generation_config()

    def schedule_names(self) -> list[str]:
        return [s.strip() for s in self.schedules.split(",") if s.strip()]

    def generation_config(self, n_gens: int | None = None) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale,
                                n_gens=n_gens or self.n_gens, batch_size=self.gen_batch_size, seed=self.seed)


@dataclass
class AMGResult:
    """What ``run_study`` measured: the dev-half checks and choices, the test-half rows and the digits runs."""
    config: dict
    checkpoint: str
    calibration: dict
    sigma_auc_per_step: list
    dev_sigma: np.ndarray = field(repr=False)      # (P, G, S) plain-CFG sigma_t on the dev half
    dev_groups: list = field(repr=False)
    guidance_1: dict = field(default_factory=dict)
    y_n_rules: dict = field(default_factory=dict)
    dev_none: dict = field(default_factory=dict)
    dev_sweep: dict = field(default_factory=dict)
    main_schedule: str = ""
    main_c3: float = 0.0
    strong_c3: float = 0.0
    rows: dict = field(default_factory=dict)       # label -> MethodRow (test half)
    traces: dict = field(default_factory=dict, repr=False)
    groups: list = field(default_factory=list, repr=False)
    digits: dict = field(default_factory=dict)
    siblings: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict, repr=False)
    matched: dict = field(default_factory=dict)

    def fired_share(self, label: str = "AMG Main", group: str = "heldout") -> float:
        """Share of the group's test generations where the switch fired at some step."""
        fired = np.nan_to_num(self.traces[label]["fired"]).any(-1)          # (P, G)
        sel = np.array([g == group for g in self.groups]) if group != "memorized" else \
            np.isin(self.groups, MEMORIZED_GROUPS)
        return float(fired[sel].mean())

    def claims(self) -> list[Claim]:
        """The paper's claims as this run measured them (``report.claims`` on ``to_metrics()``)."""
        return report_claims(self.to_metrics())

    def to_metrics(self) -> dict:
        """What ``write_metrics`` stores; its ``claims`` entry holds the ablation tests on the rows
        (``report.ablation_tests``)."""
        none, amg = self.rows["none"], self.rows["AMG Main"]
        rel = lambda a, b: (a - b) / b if b else float("nan")
        fd_n, fd_a = none.frechet.get("heldout"), amg.frechet.get("heldout")
        digits = {k: d.to_metrics() for k, d in self.digits.items()}
        rows = {label: row.to_metrics() for label, row in self.rows.items()}
        return {
            "checkpoint": self.checkpoint, "calibration": self.calibration, "main_schedule": self.main_schedule,
            "main_c3": self.main_c3, "strong_c3": self.strong_c3,
            "replication_rate_none": memorized_replication(none), "replication_rate_amg": memorized_replication(amg),
            "replication_rate_none_ci95": list(none.replication_ci["memorized"]),
            "replication_rate_amg_ci95": list(amg.replication_ci["memorized"]),
            "clip_score_none": none.clip_content["memorized"], "clip_score_amg": amg.clip_content["memorized"],
            "clip_content_change_amg": rel(amg.clip_content["memorized"], none.clip_content["memorized"]),
            "clip_heldout_none": none.clip_content["heldout"], "clip_heldout_amg": amg.clip_content["heldout"],
            "fd_none": fd_n, "fd_amg": fd_a, "fd_floor": none.frechet_floor.get("heldout"),
            "fd_heldout_change_amg": rel(fd_a, fd_n),
            "fd_memorized_none": none.frechet.get("memorized"), "fd_memorized_amg": amg.frechet.get("memorized"),
            "switch_fired_heldout": self.fired_share(), "switch_fired_memorized": self.fired_share(group="memorized"),
            "evals_per_image_none": none.evals_per_image, "evals_per_image_amg": amg.evals_per_image,
            "seconds_per_image_none": none.seconds_per_image, "seconds_per_image_amg": amg.seconds_per_image,
            "evals_ratio_amg": amg.evals_per_image / none.evals_per_image,
            "seconds_ratio_amg": amg.seconds_per_image / none.seconds_per_image,
            "digits_uncond_reduction": self.digits["unconditional"].reduction(),
            "digits_class_reduction": self.digits["class-conditional"].reduction(),
            "digits": digits, "claims": ablation_tests(rows), "sigma_auc_per_step": list(self.sigma_auc_per_step),
            "guidance_1": self.guidance_1, "y_n_rules": self.y_n_rules, "siblings": self.siblings,
            "dev_none": self.dev_none, "dev_sweep": self.dev_sweep, "matched_to_03": self.matched,
            "rows": rows,
        }

    def table(self):
        """The test-half rows as a DataFrame (the notebook's table and ``amg_rows.csv``)."""
        import pandas as pd

        cols = []
        for label, r in self.rows.items():
            cols.append({"method": label, "replication": memorized_replication(r),
                         **{f"rep {g}": r.replication.get(g) for g in MEMORIZED_GROUPS},
                         "NN planted": r.nn_is_planted["memorized"], "NCC": r.similarity_mean["memorized"],
                         "CLIP content (mem)": r.clip_content["memorized"],
                         "CLIP content (held-out)": r.clip_content["heldout"],
                         "retrieval": r.retrieval_top1["memorized"], "FD mem": r.frechet.get("memorized"),
                         "FD held-out": r.frechet.get("heldout"), "evals/img": r.evals_per_image,
                         "s/img": r.seconds_per_image})
        return pd.DataFrame(cols).set_index("method")


def _checks(cfg, backend, data, dev, index, run) -> dict:
    """sigma_t traces on the dev half (cached), the fitted lambda_t, guidance 1 and the y_N rules. The held-out
    traces and the fit are the registry's ``amg`` calibration (``heldout_sigma_traces``, ``calibrate``)."""
    import torch

    gen = cfg.generation_config(cfg.calib_gens)
    held = np.array([p.group == "heldout" for p in dev])
    sig_held, ts = heldout_sigma_traces(backend, gen, cfg.max_prompts_per_group, cfg.progress)
    cal = calibrate(sig_held, ts, cfg.calib_percentile)
    mem_texts = [p.text for p in dev if p.memorized]
    key = {"what": "amg-sigma-dev-memorized", "weights": weights_fingerprint(backend), "gen": gen.to_dict(),
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
    """Every experiment of notebook 04: the checks, the dev-half choices, the test-half tables and the digits."""
    tb = cfg.testbed.load(progress=cfg.progress)
    clip = cfg.testbed.load_clip(tb, progress=cfg.progress)
    backend, data = TestbedBackend(tb.model, tb), tb.data
    evaluator = Evaluator.for_testbed(cfg.testbed, tb, clip, seed=cfg.seed, progress=cfg.progress)
    index = SimilarityIndex(data.images)
    dev_all = evaluation_prompts(data, "dev", max_per_group=cfg.max_prompts_per_group)   # calibration: all held-out
    dev, test = cap_heldout(dev_all, cfg.heldout_prompts), cap_heldout(
        evaluation_prompts(data, "test", max_per_group=cfg.max_prompts_per_group), cfg.heldout_prompts)

    def run(method, prompts, n_gens=None):
        return run_method(backend, method, prompts, evaluator, cfg.generation_config(n_gens), chunk=cfg.chunk,
                          progress=cfg.progress)

    checks = _checks(cfg, backend, data, dev_all, index, run)
    cal: "Calibration" = checks["cal"]   # noqa: F821

    def settings(schedule, c3, **changes):
        return main_settings(schedule, c3, c1=cfg.c1, c2=cfg.c2, **changes)

    def amg(name, settings, threshold=cal.threshold):   # at the settings' own c3
        return amg_method(AMGSetup(index, threshold, settings, data.captions), name=name)

    # 1. c3 and schedule on the dev memorized prompts
    dev_mem = [p for p in dev if p.memorized]
    dev_none = run(make_method("none"), dev_mem, n_gens=cfg.dev_gens).row
    sweep = parse_number_list("c3_sweep", cfg.c3_sweep, float)
    dev_rows = {s: [run(amg(f"amg[{s}]", settings(s, c)), dev_mem, cfg.dev_gens).row for c in sweep]
                for s in cfg.schedule_names()}
    main_schedule, main_c3, strong_c3 = choose_c3(dev_rows, sweep, cfg.rep_bar)
    main = settings(main_schedule, main_c3)

    # 2. the tables on the test half
    runs = {"none": run(make_method("none"), test)}
    runs["AMG Main"] = run(amg("amg", main), test)
    runs["AMG Strong"] = run(amg("amg", replace(main, c3=strong_c3)), test)
    runs["AMG, released-code gating"] = run(amg("amg_code", replace(main, mode="code")), test)
    runs[CODE_C1_ROW] = run(amg("amg_c1_13", replace(main, c1=CODE_C1)), test)
    for terms in ABLATIONS:
        runs["+".join(terms)] = run(amg("amg_" + "+".join(terms), replace(main, terms=terms)), test)
    runs["dup, y_N = top-k caption"] = run(amg("amg_dup_topk", replace(main, terms=("dup",), caption="topk")), test)
    runs["switch always on"] = run(amg("amg_always", main, cal.always), test)
    runs["constant threshold"] = run(amg("amg_constant", main, cal.constant), test)

    from .digits_study import run_digits
    digits = {name: run_digits(cfg, class_conditional=cc) for name, cc in (("unconditional", False),
                                                                            ("class-conditional", True))}
    result = AMGResult(
        config=cfg.to_dict(), checkpoint=tb.folder.name, calibration=cal.to_dict(),
        sigma_auc_per_step=checks["auc_per_step"], dev_sigma=checks["sigma"], dev_groups=checks["groups"],
        guidance_1=checks["guidance_1"].to_metrics(), y_n_rules=checks["y_n_rules"],
        dev_none=dev_none.to_metrics(),
        dev_sweep={s: [r.to_metrics() for r in rows] for s, rows in dev_rows.items()},
        main_schedule=main_schedule, main_c3=main_c3, strong_c3=strong_c3,
        rows={label: r.row for label, r in runs.items()},
        traces={label: {k: runs[label].info[f"amg_{k}"] for k in ("sigma", "fired", "spe", "dup", "sim")}
                for label in ("AMG Main", "switch always on")},
        groups=[p.group for p in test], digits=digits)
    result.siblings = _siblings(evaluator, test, runs["none"].images, runs["AMG Main"].images)
    result.grid = _grid(cfg, test, runs, data)
    result.matched = matched_to_notebook_03(result, cfg)
    return result


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
