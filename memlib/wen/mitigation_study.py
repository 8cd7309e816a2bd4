"""Notebook 03: Wen et al.'s two mitigations (ICLR 2024, Sec. 4) against the baselines, on one harness.

1. Calibration (dev half): the unmitigated joint first-step magnitude L_p of memorized and held-out prompts
   places the l_target sweep between them (``memlib.first_step_magnitude.l_target_sweep``); PE's operating point
   is the largest l_target that halves pooled memorized replication on the dev half.
2. Curves (test half): every inference-time method at each knob value on the same prompts and noises
   (``memlib.mitigate.run_method``), scored by three privacy columns (the independent copy detector's copy rate,
   the paper's pixel Gu replication, nearest-is-planted beside its content-caption chance,
   ``run_content_reference``) against utility (content-caption and every-phrasing CLIP); each method at its
   chosen value (PE: the dev choice; a baseline: its registry default) against no mitigation with paired
   intervals; the per-step magnitude after PE (does it rebound once sampling leaves x_T?).
3. Training time: the probe (does the per-sample magnitude separate planted from ordinary training rows at a
   fixed t?), then the testbed trained from scratch with the filter at tau from ordinary rows' percentiles,
   against the unfiltered run at equal steps and seed (the shipped checkpoint, rounded as the filtered ones are
   stored); tau is chosen on the dev half by PE's criterion and reported on the test half.
4. Further testbed seeds (``more_testbed_seeds``): seed 0's dev choices carried over to each seed's test half,
   and each seed's own dev-chosen l_target; the filter is not retrained for them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..backends.testbed import TestbedBackend
from ..cache import cached_arrays, weights_fingerprint
from ..config import Config, ConfigError, check_range, parse_number_list
from ..device import ComputeParams, compute_tag
from ..first_step_magnitude import joint_first_step, l_target_sweep
from ..generation import GenerationConfig
from ..mitigate import baselines as _baselines  # noqa: F401  (registers "none" and the baselines)
from ..mitigate.columns import Evaluator
from ..mitigate.evalset import EvalPrompt, cap_heldout, evaluation_prompts
from ..mitigate.registry import available, make_method, sweep
from ..mitigate.run import open_testbed, run_content_reference, run_method
from ..testbed.build import TestbedRef
from .filter_train import ProbeResult, magnitude_probe, round_to_float16, tau_from_percentiles, train_filtered
from .methods import filter_method
from .mitigation_results import (MitigationResult, SeedResult, matched_comparison, matched_paired, operating_point,
                                 paired_summary)


@dataclass
class MitigationConfig(ComputeParams, Config):
    """Parameters of notebooks/03_mitigation.ipynb."""
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    retrain: bool = False            # retrain the filtered checkpoints instead of loading the shipped ones
    n_gens: int = 4                  # generations per prompt (PE's joint norm runs over these noises)
    num_steps: int = 25              # DDIM steps (25, not the testbed's 50: 31 curve points x 224 images on a CPU)
    guidance_scale: float = 3.0      # CFG scale (the testbed default)
    gen_batch_size: int = 128
    seed: int = 0                    # generation seed (initial noises)
    max_prompts_per_group: int = 0   # cap per group and half (0: all)
    heldout_prompts: int = 16        # held-out prompts per half (of 32; 0: all): the curves' cost is per prompt
    baselines: str = "random_token,random_number,word_repeat,embedding_noise,lower_guidance"
    pe_points: int = 5               # l_target values from the memorized to the held-out dev median
    pe_reduction_bar: float = 0.5    # PE's operating point: the largest l_target with this relative reduction
    filter_percentiles: str = "75,90,99"   # tau at these percentiles of ordinary rows' magnitudes ('' : skip)
    probe_rows: int = 512            # training rows per side in the magnitude probe
    matched_levels: int = 4          # utility levels where PE and random-token addition are compared
    grid_prompts: int = 6            # memorized test prompts in the before/after grid
    chunk: int = 48                  # prompts per cached chunk
    more_testbed_seeds: str = "1"    # further testbed seeds: seed 0's choices carried over, and their own ('': none)
    progress: bool = True
    device: str = "auto"             # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"              # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("pe_points", self.pe_points, 2, 20)
        check_range("pe_reduction_bar", self.pe_reduction_bar, 0.0, 1.0)
        check_range("matched_levels", self.matched_levels, 1, 20)
        check_range("probe_rows", self.probe_rows, 2)
        check_range("chunk", self.chunk, 1)
        check_range("grid_prompts", self.grid_prompts, 0, 32)
        check_range("max_prompts_per_group", self.max_prompts_per_group, 0)
        check_range("heldout_prompts", self.heldout_prompts, 0)
        known = set(available()) - {"none", "wen_pe"}
        bad = [b for b in self.baseline_names() if b not in known]
        if bad:
            raise ConfigError(f"parameter 'baselines' names {bad}; choose from {sorted(known)}")
        self.percentiles()
        self.extra_seeds()
        self.generation_config()

    def extra_seeds(self) -> list[int]:
        """``more_testbed_seeds`` as integers, without the main seed."""
        seeds = parse_number_list("more_testbed_seeds", self.more_testbed_seeds, int, 0)
        return [s for s in dict.fromkeys(seeds) if s != self.testbed.seed]

    def baseline_names(self) -> list[str]:
        return [b.strip() for b in self.baselines.split(",") if b.strip()]

    def percentiles(self) -> list[float]:
        ps = parse_number_list("filter_percentiles", self.filter_percentiles, float)
        if any(not 0 < p < 100 for p in ps):
            raise ConfigError(f"parameter 'filter_percentiles' = {self.filter_percentiles!r}: each in (0, 100)")
        return ps

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                batch_size=self.gen_batch_size, seed=self.seed)


def _grid(cfg, prompts, runs: dict, data) -> dict:
    """First generation of the first memorized test prompts under a few methods, with the planted image."""
    idx = [i for i, p in enumerate(prompts) if p.memorized][:cfg.grid_prompts]
    planted = [int(np.flatnonzero(data.cluster == prompts[i].cluster)[0]) for i in idx]
    return {"captions": [prompts[i].text for i in idx], "planted": data.images[planted],
            "rows": {label: run.images[idx, 0] for label, run in runs.items()}}


def _halves(tb, cfg: MitigationConfig) -> tuple[list[EvalPrompt], list[EvalPrompt]]:
    return tuple(cap_heldout(evaluation_prompts(tb.data, half, max_per_group=cfg.max_prompts_per_group),
                             cfg.heldout_prompts) for half in ("dev", "test"))


@dataclass
class _Calibration:
    magnitudes: np.ndarray          # joint first-step magnitude of every dev prompt
    l_targets: list[float]
    rows: list                      # dev memorized prompts: none, then PE at each l_target
    operating: float | None


def _calibrate(backend, dev: list[EvalPrompt], gen: GenerationConfig, cfg: MitigationConfig, run) -> _Calibration:
    """The l_target sweep between the memorized and held-out dev medians of the joint first-step magnitude, and
    PE's operating point: the largest l_target that lowers pooled memorized dev replication by ``pe_reduction_bar``
    (``operating_point``)."""
    mag = joint_first_step(backend, [p.text for p in dev], gen)
    mem = np.array([p.memorized for p in dev])
    l_targets = l_target_sweep(mag[mem], mag[~mem], cfg.pe_points)
    dev_mem = [p for p in dev if p.memorized]      # the operating point is a replication criterion
    rows = [run(make_method("none"), dev_mem).row] + [run(make_method("wen_pe", lt), dev_mem).row for lt in l_targets]
    return _Calibration(mag, l_targets, rows, operating_point(rows[0], rows[1:], cfg.pe_reduction_bar))


def _by_group(values: np.ndarray, prompts: list[EvalPrompt]) -> dict[str, np.ndarray]:
    return {g: values[np.array([p.group == g for p in prompts])] for g in dict.fromkeys(p.group for p in prompts)}


def run_study(cfg: MitigationConfig) -> MitigationResult:
    """Run notebook 03: calibration on the dev half, every curve on the test half, the training-time filter, then
    the further testbed seeds (the steps of the module docstring)."""
    tb = cfg.testbed.load(progress=cfg.progress, device=cfg.compute().device)
    clip = cfg.testbed.load_clip(tb, progress=cfg.progress, device=cfg.compute().device)
    backend = TestbedBackend(tb.model, tb, cfg.compute().dtype)
    gen = cfg.generation_config()
    evaluator = Evaluator.for_testbed(cfg.testbed, tb, clip, seed=cfg.seed, progress=cfg.progress,
                                      device=cfg.compute().device)
    dev, test = _halves(tb, cfg)

    def run(method, prompts, ev=evaluator, model=backend):
        return run_method(model, method, prompts, ev, gen, chunk=cfg.chunk, progress=cfg.progress)

    # 1. calibration on the dev half
    cal = _calibrate(backend, dev, gen, cfg, run)
    l_targets, operating = cal.l_targets, cal.operating

    # 2. curves on the test half, and the content-caption reference (the chance level of nearest-is-planted)
    runs = {"none": run(make_method("none"), test)}
    for name in cfg.baseline_names():
        for m in sweep(name):
            runs[m.label] = run(m, test)
    pe_labels = []
    for lt in l_targets:
        m = make_method("wen_pe", lt)
        runs[m.label] = run(m, test)
        pe_labels.append(m.label)
    content = run_content_reference(backend, test, evaluator, gen, cfg.chunk, progress=cfg.progress).row
    rows = [r.row for r in runs.values()]
    none = runs["none"].row
    headline = runs[make_method("wen_pe", operating).label] if operating is not None else None
    chosen = {name: runs[make_method(name).label].row for name in cfg.baseline_names()}
    if headline is not None:
        chosen = {"wen_pe": headline.row, **chosen}
    held = np.array([p.group == "heldout" for p in test])
    zero = None
    if headline is not None:
        untouched = held & (headline.info["iterations"] == 0)
        same = [bool((headline.images[i] == runs["none"].images[i]).all()) for i in np.flatnonzero(untouched)]
        zero = {"heldout_untouched_share": float(untouched.sum() / max(held.sum(), 1)),
                "untouched_bit_identical_share": float(np.mean(same)) if same else float("nan"),
                "n_untouched": int(untouched.sum())}
    memsel = np.array([p.memorized for p in test])
    rebound = {label: runs[label].text_norm[memsel].mean(axis=(0, 1)) for label in ["none"] + pe_labels}
    rebound_heldout = {label: runs[label].text_norm[held].mean(axis=(0, 1)) for label in ["none"] + pe_labels}
    grid_runs = {"none": runs["none"]}
    if headline is not None:
        grid_runs[f"PE l_target={operating:g}"] = headline
    for name in ("random_token", "lower_guidance"):
        if name in cfg.baseline_names():
            m = sweep(name)[-1]
            grid_runs[m.label] = runs[m.label]
    pe_rows = [runs[lb].row for lb in pe_labels]
    rt_rows = [r for r in rows if r.method == "random_token"]
    matched = matched_comparison(pe_rows, rt_rows, none, cfg.matched_levels)

    # 3. training time
    filt = _filter_study(cfg, tb, backend, dev, test, evaluator, run)

    # 4. further testbed seeds: seed 0's dev choices carried over, and each seed's own PE choice
    seeds = {s: seed_study(cfg, s, operating, gen) for s in cfg.extra_seeds()}
    return MitigationResult(
        rows=rows, l_targets=l_targets, dev_magnitudes=_by_group(cal.magnitudes, dev), dev_rows=cal.rows,
        pe_operating_l_target=operating, zero_iteration=zero, rebound=rebound, rebound_heldout=rebound_heldout,
        timesteps=_timesteps(backend, gen), matched=matched, grid=_grid(cfg, test, grid_runs, tb.data),
        gen_cfg=gen, checkpoint=str(tb.folder.name),
        pe_iterations={lb: runs[lb].info["iterations"] for lb in pe_labels}, test_groups=[p.group for p in test],
        content_reference=content, chosen=chosen, paired={k: paired_summary(none, r) for k, r in chosen.items()},
        matched_paired=matched_paired(pe_rows, rt_rows, none, cfg.matched_levels), seeds=seeds,
        reduction_bar=cfg.pe_reduction_bar, **filt)


def _filter_study(cfg: MitigationConfig, tb, backend, dev, test, evaluator, run) -> dict:
    """The probe on the shipped checkpoint; then the testbed trained with the filter at each tau, scored from its
    saved float16 weights against the unfiltered run rounded the same way, on the dev half's memorized prompts
    (where tau is chosen, as PE's l_target is) and on the whole test half."""
    weights = weights_fingerprint(backend)
    probe = ProbeResult(**{k: (v.tolist() if v.ndim else int(v)) for k, v in cached_arrays(
        "filter-probe", {"weights": weights, "compute": compute_tag(backend), "rows": cfg.probe_rows,
                         "seed": cfg.seed},
        lambda: {k: np.asarray(v) for k, v in asdict(magnitude_probe(tb, cfg.probe_rows, seed=cfg.seed)).items()}
    ).items()})
    out = {"probe": probe, "taus": {}, "filter_rows": [], "filter_drops": {}, "filter_dev_rows": []}
    if not cfg.percentiles():
        return out
    got = cached_arrays("filter-taus", {"weights": weights, "p": cfg.percentiles(), "seed": cfg.seed + 1},
                        lambda: {"tau": np.array(list(tau_from_percentiles(tb, cfg.percentiles(),
                                                                            seed=cfg.seed + 1).values()))})
    taus = dict(zip(cfg.percentiles(), got["tau"].tolist()))
    unf = round_to_float16(tb)
    unf_backend = TestbedBackend(unf.model, unf, cfg.compute().dtype)
    dev_mem = [p for p in dev if p.memorized]
    rows, dev_rows, drops = [], [], {}
    for prompts, into in ((test, rows), (dev_mem, dev_rows)):
        base = run(make_method("none"), prompts, model=unf_backend).row
        base.method = "unfiltered"      # the shipped run: equal steps, seed and batch order, no filter
        into.append(base)
    for tau in taus.values():
        trained, method = filter_run(cfg, tau, tb)
        drops[tau] = _drop_stats(trained, tb.data)
        rows.append(run(method, test).row)
        dev_rows.append(run(method, dev_mem).row)
    chosen = operating_point(dev_rows[0], dev_rows[1:], cfg.pe_reduction_bar)
    best = next(r for r in rows[1:] if r.value == chosen)
    return {**out, "taus": taus, "filter_rows": rows, "filter_drops": drops, "filter_dev_rows": dev_rows,
            "filter_chosen_tau": chosen, "filter_paired": paired_summary(rows[0], best)}


def filter_run(cfg: MitigationConfig, tau: float, tb) -> tuple:
    """(the filtered run at ``tau``, the harness method that scores it). The run is trained now unless it is
    saved (``retrain`` redoes it); the float32 weights training ended with stay in its memory, and the method
    loads the saved float16 weights instead (``filter_method``), so the run that trains scores what every later
    run loads."""
    cx = cfg.compute()
    trained = train_filtered(cfg.testbed, tau, retrain=cfg.retrain, progress=cfg.progress, base=tb, device=cx.device)
    return trained, filter_method(cfg.testbed, tau, base=tb, device=cx.device, precision=cx.dtype)


def seed_study(cfg: MitigationConfig, seed: int, transfer: float | None, gen: GenerationConfig) -> SeedResult:
    """Testbed ``seed`` (its shipped UNet and CLIP; its own copy detector): its dev calibration, then on its test
    half no mitigation, the content-caption reference, PE at seed 0's l_target and at its own, and each baseline
    at its chosen value. The training-time filter is not retrained here."""
    ref = replace(cfg.testbed, seed=seed)
    tb, backend, evaluator = open_testbed(ref, cfg)
    dev, test = _halves(tb, cfg)

    def run(method, prompts):
        return run_method(backend, method, prompts, evaluator, gen, chunk=cfg.chunk, progress=cfg.progress)

    cal = _calibrate(backend, dev, gen, cfg, run)
    rows = {"none": run(make_method("none"), test).row}
    done = {}
    for role, lt in (("pe_transfer", transfer), ("pe_own", cal.operating)):
        if lt is not None:
            done.setdefault(lt, run(make_method("wen_pe", lt), test).row)
            rows[role] = done[lt]
    rows.update({name: run(make_method(name), test).row for name in cfg.baseline_names()})
    content = run_content_reference(backend, test, evaluator, gen, cfg.chunk, progress=cfg.progress).row
    return SeedResult(seed, str(tb.folder.name), cal.l_targets, _by_group(cal.magnitudes, dev), cal.rows,
                      cal.operating, transfer, rows, content,
                      {k: paired_summary(rows["none"], r) for k, r in rows.items() if k != "none"})


def _timesteps(backend, gen: GenerationConfig) -> list[int]:
    sched = backend.scheduler(gen.scheduler)
    sched.set_timesteps(gen.num_steps)
    return [int(t) for t in sched.timesteps]


def _drop_stats(tf, data) -> dict:
    """How much the filter dropped: share of all drawn samples, and how the drops split over row kinds (from the
    loss state saved beside the weights, as a later run reads it)."""
    from ..checkpoint import load_loss_state

    state = load_loss_state(tf.folder)
    skips = state["skips"].numpy()
    dropped = state["dropped"].numpy()
    steps = len(dropped)
    batch = tf.meta["run"]["train"]["batch_size"]
    planted = np.isin(data.group, ("verbatim", "verbatim_knob", "image_dup", "caption_dup"))
    total = max(int(skips.sum()), 1)
    return {"dropped_share": float(dropped.sum() / max(steps * batch, 1)),
            "dropped_share_last_quarter": float(dropped[-steps // 4:].sum() / max(steps // 4 * batch, 1)),
            "planted_share_of_drops": float(skips[planted].sum() / total),
            "planted_share_of_rows": float(planted.mean()),
            "verbatim_drops_per_row": float(skips[data.group == "verbatim"].mean()),
            "ordinary_drops_per_row": float(skips[data.group == "generic"].mean()),
            "draws_per_row": float(steps * batch / len(data))}
