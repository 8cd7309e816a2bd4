"""Notebook 02's experiment: which tokens make a prompt memorized (Wen et al., ICLR 2024, Sec. 3.2), and does
editing the most significant token lower the magnitude and break replication? The maths is in
``memlib.wen.attribution``, the interventions in ``memlib.wen.interventions``, the figures in
``memlib.wen.explain_plots`` and the claims in ``memlib.wen.explain_report``.

The headline is Wen's exact setting: SS(i) averaged over all sampling steps, L_t one l2 norm over the 4-image
batch (``ExplainConfig`` defaults). Each trigger group is split into development and test halves by planted
cluster (``memlib.splits``). A window S = the first k steps is a free choice, so it is chosen on the dev half
only (``choose_window``) and, like the headline, reported on the test half with a Wilson 95 % interval.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import comb, nan

import numpy as np
from tqdm.auto import tqdm

from ..backends import make_backend
from ..config import Config, check_range, parse_number_list
from ..device import ComputeParams
from ..generation import GenerationConfig
from ..splits import split
from ..testbed.build import TestbedRef
from .attribution import (TokenSignificance, input_embedding_significance, integrated_significance,
                          occlusion_significance, token_significance, trigger_positions)
from .explain_results import ExplainResult, HalfStats, TriggerGroupStats
from .intervals import rate_with_interval
from .interventions import content_routes, drop_control, edit_experiment, padding_link, row_routes

TRIGGER_GROUPS = ("verbatim", "caption_dup")   # planted groups whose prompts carry a trigger word
WINDOW_CANDIDATES = (1, 5, 10, 25, 50)   # windows S = the first k steps the dev half chooses among (and all steps)


@dataclass
class ExplainConfig(ComputeParams, Config):
    """Parameters of notebooks/02_explain.ipynb."""
    backend: str = "testbed"         # 'testbed', 'tiny-sd' (random weights; tests) or an SD model id/folder
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    prompts_file: str = "nemo"       # SD backend: prompts to explain (jsonl in Wen's format, or 'nemo')
    n_gens: int = 4                  # generations whose gradients are averaged (Wen: 4)
    num_steps: int = 50              # DDIM steps
    attribution_steps: int = 0       # S of the bars and of `trigger_top2_rate`: the first k steps (0: all, Wen's
                                     # setting); every step's gradient is recorded, so all windows are reported
    batch_loss: bool = True          # L_t: one l2 norm over the n-image batch (Wen's notebook); False: the mean of
                                     # the per-image norms
    reference_trajectory_variant: bool = True   # also attribute the trigger groups on the trajectory Wen's code
                                                # takes (swapped guidance on attributed steps; a variant)
    guidance_scale: float = 3.0
    max_prompts: int = 0             # cap per trigger group, verbatim and caption_dup (0: all)
    illustrate_prompts: int = 8      # prompts of the groups without a trigger (image_dup, heldout) to attribute
    ig_points: int = 32              # integrated-gradients cross-check: midpoints on the path e_empty -> e_p
    control_prompts: int = 64        # held-out prompts regenerated with their rows swapped (padding control)
    more_testbed_seeds: str = "1,2"  # testbed seeds on which the headline alone is measured again ('' for none)
    seed: int = 0                    # generation seed (initial noises)
    interactive: bool = False        # show the ipywidgets explorer (never under papermill)
    progress: bool = True
    device: str = "auto"             # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"              # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("n_gens", self.n_gens, 1, 64)
        check_range("guidance_scale", self.guidance_scale, 0.0, 100.0)   # beyond ~30 CFG only saturates
        check_range("num_steps", self.num_steps, 1, 1000)
        check_range("attribution_steps", self.attribution_steps, 0, self.num_steps)
        check_range("max_prompts", self.max_prompts, 0)
        check_range("illustrate_prompts", self.illustrate_prompts, 0)
        check_range("ig_points", self.ig_points, 1, 1024)
        check_range("control_prompts", self.control_prompts, 0)
        self.extra_seeds()

    def extra_seeds(self) -> list[int]:
        """``more_testbed_seeds`` as integers, without the main seed (testbed backend only)."""
        seeds = parse_number_list("more_testbed_seeds", self.more_testbed_seeds, int, 0, distinct=True)
        return [x for x in dict.fromkeys(seeds) if x != self.testbed.seed] if self.backend == "testbed" else []

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                seed=self.seed)

    def steps(self) -> list[int]:
        """The window S the per-prompt significance (bars, ``trigger_top2_rate``) averages over."""
        return list(range(self.attribution_steps or self.num_steps))

    def window_candidates(self) -> list[int]:
        """The windows k the dev half chooses among: ``WINDOW_CANDIDATES`` below ``num_steps``, and all steps."""
        return sorted({k for k in WINDOW_CANDIDATES if k < self.num_steps} | {self.num_steps})


def top2_hit(sig: np.ndarray, positions: list[int]) -> bool:
    """Is one of the trigger's tokens among the two most significant tokens?"""
    return bool(set(np.argsort(-sig)[:2].tolist()) & set(positions))


def top2_chance(n_tokens: int, n_trigger: int) -> float:
    """Probability that a random ranking puts one of ``n_trigger`` of ``n_tokens`` tokens in its top 2."""
    if n_tokens < 2:
        return float(n_trigger > 0)
    return 1.0 - comb(n_tokens - n_trigger, 2) / comb(n_tokens, 2)


def explain_prompts(backend, prompts: list[str], cfg: ExplainConfig, desc: str = "attributing",
                    reference_trajectory: bool = False):
    """Gradients at every sampling step (so any window can be read off), significance over ``cfg.steps()``."""
    gen = cfg.generation_config()
    return [token_significance(backend, p, gen, batch_loss=cfg.batch_loss,
                               reference_trajectory=reference_trajectory).over_first(len(cfg.steps()))
            for p in tqdm(prompts, disable=not cfg.progress, desc=desc)]


def split_unit(prompt) -> str:
    """A testbed prompt's split unit: its planted cluster (the captions of one image stay on one side)."""
    return f"cluster:{prompt.cluster}" if prompt.cluster >= 0 else f"prompt:{prompt.text}"


def halves_of(prompts) -> list[str]:
    """'dev' or 'test' per prompt, in order (``memlib.splits``, one group at a time)."""
    parts = split(list(range(len(prompts))), lambda i: split_unit(prompts[i]))
    half = {i: h for h, idx in parts.items() for i in idx}
    return [half[i] for i in range(len(prompts))]


def window_hits(atts: list[TokenSignificance], pos: list[list[int]], k: int) -> list[bool]:
    """Per prompt: is a trigger token in the top 2 of the gradients averaged over the first ``k`` steps?"""
    return [top2_hit(a.over_first(k).significance, t) for a, t in zip(atts, pos)]


def choose_window(atts: list[TokenSignificance], pos: list[list[int]], halves: list[str],
                  candidates: list[int]) -> tuple[int, dict[int, float]]:
    """The window k with the best top-2 rate on the dev prompts, and every candidate's dev rate. Only dev
    prompts are read. Ties go to the longest window (closest to Wen's all-step setting); with no dev prompt
    there is no evidence to leave Wen's setting, so the longest candidate is returned."""
    if not (len(atts) == len(pos) == len(halves)):
        raise ValueError(f"{len(atts)} attributions, {len(pos)} trigger lists and {len(halves)} halves differ")
    if not candidates:
        raise ValueError("no candidate windows to choose from")
    dev = [i for i, h in enumerate(halves) if h == "dev"]
    if not dev:
        return max(candidates), {}
    rates = {k: _rate(window_hits([atts[i] for i in dev], [pos[i] for i in dev], k)) for k in candidates}
    return max(rates, key=lambda k: (rates[k], k)), rates


def run_study(cfg: ExplainConfig) -> ExplainResult:
    """Notebook 02's experiment (module docstring); on an SD backend, attributions and magnitudes only."""
    if cfg.backend != "testbed":
        return _run_real(cfg)
    from ..metrics import ReplicationIndex

    backend = make_backend("testbed", cfg.testbed, progress=cfg.progress, **cfg.backend_options())
    tb, cap, gen = backend.testbed, (cfg.max_prompts or None), cfg.generation_config()
    groups = {g: tb.data.prompts_in(g)[:cap] for g in TRIGGER_GROUPS}
    groups.update({g: tb.data.prompts_in(g)[:cfg.illustrate_prompts] for g in ("image_dup", "heldout")})
    res = ExplainResult({}, checkpoint=tb.meta["sha256"], batch_loss=cfg.batch_loss)
    for g, ps in groups.items():
        res.attributions[g] = explain_prompts(backend, [p.text for p in ps], cfg, f"attributing {g}")
        if g in ("verbatim", "caption_dup"):
            res.triggers[g] = [trigger_positions(backend.tokenizer, p.text, p.trigger) for p in ps]
            res.halves[g] = halves_of(ps)
            if cfg.reference_trajectory_variant:
                res.reference[g] = explain_prompts(backend, [p.text for p in ps], cfg, f"reference trajectory {g}",
                                                   reference_trajectory=True)
            res.occlusion[g] = [occlusion_significance(backend, p.text, gen) for p in ps]
            res.integrated[g] = [integrated_significance(backend, p.text, gen, cfg.ig_points)
                                 for p in tqdm(ps, disable=not cfg.progress, desc=f"integrated gradients {g}")]
            res.input_grad[g] = [input_embedding_significance(backend, p.text, gen) for p in ps]
    _summarize_attributions(res, cfg)

    index = ReplicationIndex(tb.data.images, tb.data.cluster)
    as_is = {}
    for g, st in res.trigger_stats.items():
        st.routes, measured = row_routes(backend, index, groups[g], gen, cfg.progress)
        as_is[g] = measured["full"]
        # hits in Wen's exact setting (all steps), every prompt of the group: a diagnostic, nothing is chosen
        hits = window_hits(res.attributions[g], res.triggers[g], cfg.num_steps)
        share = np.array([1 - a.significance.sum() / a.all_rows_total for a in res.integrated[g]])
        st.padding_link, rows = padding_link(hits, share, measured, [p.text for p in groups[g]])
        res.padding_rows += [dict(group=g, **r) for r in rows]
    heldout = tb.data.prompts_in("heldout")[: cfg.control_prompts]
    if heldout:
        clip = cfg.testbed.load_clip(tb, cfg.progress, cfg.compute().device)
        res.heldout_routes = content_routes(backend, clip, heldout, gen, cfg.progress)
    if groups["verbatim"]:
        res.edit, res.edit_trigger_dropped, res.edits = edit_experiment(
            backend, index, groups["verbatim"], res.attributions["verbatim"], gen, as_is["verbatim"], cfg.progress)
        res.drop_control, res.drops = drop_control(backend, index, groups["verbatim"], res.triggers["verbatim"], gen,
                                                   cfg.progress)
    res.seed_halves = {cfg.testbed.seed: {g: st.halves for g, st in res.trigger_stats.items()}}
    res.seed_halves.update({s: headline_on_seed(cfg, s) for s in cfg.extra_seeds()})
    return res


def headline_on_seed(cfg: ExplainConfig, seed: int) -> dict[str, HalfStats]:
    """The headline alone (Wen's exact setting and the dev-chosen window, test half) on another testbed seed."""
    from dataclasses import replace

    backend = make_backend("testbed", replace(cfg.testbed, seed=seed), progress=cfg.progress,
                           **cfg.backend_options())
    out = {}
    for g in TRIGGER_GROUPS:
        ps = backend.testbed.data.prompts_in(g)[: cfg.max_prompts or None]
        if not ps:
            continue
        atts = explain_prompts(backend, [p.text for p in ps], cfg, f"seed {seed}: attributing {g}")
        pos = [trigger_positions(backend.tokenizer, p.text, p.trigger) for p in ps]
        out[g] = _half_stats(atts, pos, halves_of(ps), None, cfg)
    return out


def _rate(hits) -> float:
    return float(np.mean(hits))


def _summarize_attributions(res: ExplainResult, cfg: ExplainConfig) -> None:
    """Top-2 rates of every attribution method per trigger group; top tokens and mean magnitude per group."""
    for g, pos in res.triggers.items():
        atts = res.attributions[g]
        if not atts:
            continue
        # the same gradients over other windows S (free: every step's gradient is kept); 'all' is Wen's notebook
        windows = {f"first{k}": k for k in cfg.window_candidates() if k < cfg.num_steps} | {"all": cfg.num_steps}
        rate, ci = rate_with_interval([top2_hit(a.significance, t) for a, t in zip(atts, pos)])
        res.trigger_stats[g] = TriggerGroupStats(
            n_prompts=len(atts),
            trigger_top2_rate=rate,
            trigger_top2_rate_ci95=ci,
            trigger_top2_chance=_rate([top2_chance(len(a.tokens), len(t)) for a, t in zip(atts, pos)]),
            trigger_top2_rate_by_steps={name: _rate([top2_hit(a.over_first(k).significance, t)
                                                     for a, t in zip(atts, pos)]) for name, k in windows.items()},
            trigger_top2_rate_occlusion=_rate([top2_hit(o.significance, t) for o, t in zip(res.occlusion[g], pos)]),
            trigger_top2_rate_input_embedding=_rate([top2_hit(a.significance, t)
                                                     for a, t in zip(res.input_grad[g], pos)]),
            **_integrated_stats(res.integrated[g], pos, atts),
            halves=_half_stats(atts, pos, res.halves[g], res.reference.get(g), cfg))
    for g, atts in res.attributions.items():
        # which tokens win, so a miss can be read (v2: the constant first word "a" won 13 of 32 verbatim prompts)
        top1 = Counter(a.tokens[int(np.argmax(a.significance))] for a in atts if len(a.tokens))
        res.top1_token_counts[g] = dict(top1.most_common(8))
        res.mean_magnitude[g] = float(np.mean([a.magnitude for a in atts])) if atts else nan


def _half_stats(atts: list[TokenSignificance], pos: list[list[int]], halves: list[str],
                reference: list[TokenSignificance] | None, cfg: ExplainConfig) -> HalfStats:
    """Test-half rates: Wen's exact setting (all steps), the window chosen on the dev half, the reference code's
    trajectory (all steps), and chance; each rate with its Wilson 95 % interval."""
    test = [i for i, h in enumerate(halves) if h == "test"]
    k, dev_rates = choose_window(atts, pos, halves, cfg.window_candidates())
    t_atts, t_pos = [atts[i] for i in test], [pos[i] for i in test]
    exact, exact_ci = rate_with_interval(window_hits(t_atts, t_pos, cfg.num_steps))
    window, window_ci = rate_with_interval(window_hits(t_atts, t_pos, k))
    ref, ref_ci = (rate_with_interval(window_hits([reference[i] for i in test], t_pos, cfg.num_steps))
                   if reference is not None else (None, None))
    chance = _rate([top2_chance(len(a.tokens), len(t)) for a, t in zip(t_atts, t_pos)]) if test else nan
    return HalfStats(n_dev=len(halves) - len(test), n_test=len(test), batch_loss=cfg.batch_loss,
                     all_steps_test=exact, all_steps_test_ci95=exact_ci,
                     window_rates_dev={str(c): r for c, r in dev_rates.items()}, chosen_window_dev=k,
                     window_test=window, window_test_ci95=window_ci, chance_test=chance,
                     reference_trajectory_test=ref, reference_trajectory_test_ci95=ref_ci)


def _integrated_stats(ig: list[TokenSignificance], pos: list[list[int]], wen: list[TokenSignificance]) -> dict:
    """Integrated gradients' top-2 rate, their completeness error, and how early on the path from e_empty to
    e_p the first-step magnitude saturates (for prompts Wen's first-step gradient ranks right and wrong)."""
    alphas = (np.arange(len(ig[0].path)) + 0.5) / len(ig[0].path)
    # first midpoint where the magnitude reaches 90 % of d(p): well below 1 means a saturated, flat end
    a90 = np.array([alphas[np.argmax(a.path >= 0.9 * a.magnitude)] if (a.path >= 0.9 * a.magnitude).any()
                    else 1.0 for a in ig])
    wen_hit = np.array([top2_hit(w.over_first(1).significance, t) for w, t in zip(wen, pos)])
    return dict(
        trigger_top2_rate_integrated=_rate([top2_hit(a.significance, t) for a, t in zip(ig, pos)]),
        integrated_completeness_max_error=float(max(abs(a.all_rows_total / a.magnitude - 1) for a in ig)),
        # share of d(p) the EOS/padding rows carry (Wen's chart leaves them out)
        integrated_padding_share=float(np.mean([1 - a.significance.sum() / a.all_rows_total for a in ig])),
        path_alpha90_mean=float(a90.mean()),
        path_alpha90_wen_first_step_hits=float(a90[wen_hit].mean()) if wen_hit.any() else nan,
        path_alpha90_wen_first_step_misses=float(a90[~wen_hit].mean()) if (~wen_hit).any() else nan)


def _run_real(cfg: ExplainConfig) -> ExplainResult:
    """SD backend: attributions and magnitudes only (no training set to measure replication against)."""
    from ..prompts import load_prompt_file

    prompts = load_prompt_file(cfg.prompts_file, "memorized")[: cfg.max_prompts or None]
    backend = make_backend(cfg.backend, seed=cfg.seed, **cfg.backend_options())
    res = ExplainResult({"memorized": explain_prompts(backend, prompts, cfg)}, checkpoint=cfg.backend,
                        batch_loss=cfg.batch_loss)
    _summarize_attributions(res, cfg)
    return res
