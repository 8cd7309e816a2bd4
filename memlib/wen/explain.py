"""Notebook 02's experiment: which tokens make a prompt memorized (Wen et al., ICLR 2024, Sec. 3.2), and does
editing the most significant token lower the magnitude and break replication? See ``memlib.explain``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from math import comb, nan

import numpy as np
from tqdm.auto import tqdm

from ..backends import make_backend
from ..config import Config, check_range
from .scores import wen_score
from .rows import ROW_SETS, RowSwapBackend
from .attribution import (TokenSignificance, drop_token, input_embedding_significance, integrated_significance,
                      occlusion_significance, token_significance, trigger_positions)
from ..generate import GenerationConfig, generate
from ..testbed.build import TestbedRef


@dataclass
class ExplainConfig(Config):
    """Parameters of notebooks/02_explain.ipynb."""
    backend: str = "testbed"         # 'testbed', 'tiny-sd' (random weights; tests) or an SD model id/folder
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    prompts_file: str = "nemo"       # SD backend: prompts to explain (jsonl in Wen's format, or 'nemo')
    n_gens: int = 4                  # generations whose gradients are averaged (Wen: 4)
    num_steps: int = 50              # DDIM steps
    attribution_steps: int = 10      # S: average gradients over the first k steps (0: all, Wen's notebook);
                                     # gradients of every step are recorded, so all windows are reported
    guidance_scale: float = 3.0
    max_prompts: int = 0             # cap per trigger group, verbatim and caption_dup (0: all)
    illustrate_prompts: int = 8      # prompts of the groups without a trigger (image_dup, heldout) to attribute
    ig_points: int = 32              # integrated-gradients cross-check: midpoints on the path e_empty -> e_p
    seed: int = 0                    # generation seed (initial noises)
    interactive: bool = False        # show the ipywidgets explorer (never under papermill)
    progress: bool = True

    def validate(self) -> None:
        check_range("n_gens", self.n_gens, 1, 64)
        check_range("num_steps", self.num_steps, 1, 1000)
        check_range("attribution_steps", self.attribution_steps, 0, self.num_steps)
        check_range("max_prompts", self.max_prompts, 0)
        check_range("illustrate_prompts", self.illustrate_prompts, 0)
        check_range("ig_points", self.ig_points, 1, 1024)

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                seed=self.seed)

    def steps(self) -> list[int]:
        """The window S the headline significance averages over."""
        return list(range(self.attribution_steps or self.num_steps))


@dataclass
class ExplainResult:
    attributions: dict[str, list[TokenSignificance]]   # group -> per prompt
    triggers: dict[str, list[list[int]]]               # group -> trigger token positions per prompt
    occlusion: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    integrated: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    input_grad: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    edits: list[dict] = field(default_factory=list)    # the edit experiment, one row per verbatim prompt
    drops: list[dict] = field(default_factory=list)    # the drop control, one row per (verbatim prompt, token)
    metrics: dict = field(default_factory=dict)


def top2_hit(sig: np.ndarray, positions: list[int]) -> bool:
    """Is one of the trigger's tokens among the two most significant tokens?"""
    return bool(set(np.argsort(-sig)[:2].tolist()) & set(positions))


def top2_chance(n_tokens: int, n_trigger: int) -> float:
    """Probability that a random ranking puts one of ``n_trigger`` of ``n_tokens`` tokens in its top 2."""
    if n_tokens < 2:
        return float(n_trigger > 0)
    return 1.0 - comb(n_tokens - n_trigger, 2) / comb(n_tokens, 2)


def explain_prompts(backend, prompts: list[str], cfg: ExplainConfig, desc: str = "attributing"):
    """Gradients at every sampling step (so any window can be read off), significance over ``cfg.steps()``."""
    gen = cfg.generation_config()
    return [token_significance(backend, p, gen).over_first(len(cfg.steps()))
            for p in tqdm(prompts, disable=not cfg.progress, desc=desc)]


def run_explanation(cfg: ExplainConfig) -> ExplainResult:
    if cfg.backend != "testbed":
        return _run_real(cfg)
    backend = make_backend("testbed", cfg.testbed, progress=cfg.progress)
    tb, cap = backend.testbed, (cfg.max_prompts or None)
    groups = {g: tb.data.prompts_in(g)[:cap] for g in ("verbatim", "caption_dup")}
    groups.update({g: tb.data.prompts_in(g)[:cfg.illustrate_prompts] for g in ("image_dup", "heldout")})
    res = ExplainResult({}, {})
    for g, ps in groups.items():
        res.attributions[g] = explain_prompts(backend, [p.text for p in ps], cfg, f"attributing {g}")
        if g in ("verbatim", "caption_dup"):
            res.triggers[g] = [trigger_positions(backend.tokenizer, p.text, p.trigger) for p in ps]
            res.occlusion[g] = [occlusion_significance(backend, p.text, cfg.generation_config()) for p in ps]
            res.integrated[g] = [integrated_significance(backend, p.text, cfg.generation_config(), cfg.ig_points)
                                 for p in tqdm(ps, disable=not cfg.progress, desc=f"integrated gradients {g}")]
            res.input_grad[g] = [input_embedding_significance(backend, p.text, cfg.generation_config()) for p in ps]
    m = res.metrics
    for g, pos in res.triggers.items():
        hits = [top2_hit(a.significance, t) for a, t in zip(res.attributions[g], pos)]
        m[f"{g}_trigger_top2_rate"] = float(np.mean(hits)) if hits else nan
        m[f"{g}_n_prompts"] = len(hits)
        m[f"{g}_trigger_top2_chance"] = float(np.mean([top2_chance(len(a.tokens), len(t))
                                                       for a, t in zip(res.attributions[g], pos)])) if hits else nan
        # the same gradients over other windows S (free: every step's gradient is kept); 'all' is Wen's notebook
        by = {f"first{k}": k for k in (1, 10) if k < cfg.num_steps} | {"all": cfg.num_steps}
        m[f"{g}_trigger_top2_rate_by_steps"] = {
            name: float(np.mean([top2_hit(a.over_first(k).significance, t)
                                 for a, t in zip(res.attributions[g], pos)])) if hits else nan
            for name, k in by.items()}
        m[f"{g}_trigger_top2_rate_all_steps"] = m[f"{g}_trigger_top2_rate_by_steps"]["all"]
        # gradient-free cross-check (not Wen's method): first-step magnitude lost by dropping each token
        m[f"{g}_trigger_top2_rate_occlusion"] = float(np.mean(
            [top2_hit(o.significance, t) for o, t in zip(res.occlusion[g], pos)])) if hits else nan
        # third (not Wen's): the same first-step gradient norm at the encoder's input, where every route adds up
        m[f"{g}_trigger_top2_rate_input_embedding"] = float(np.mean(
            [top2_hit(a.significance, t) for a, t in zip(res.input_grad[g], pos)])) if hits else nan
        m.update(_integrated_metrics(g, res.integrated[g], pos, res.attributions[g]) if hits else {})
    for g, atts in res.attributions.items():
        # which tokens win, so a miss can be read (v2: the constant first word "a" won 13 of 32 verbatim prompts)
        top1 = Counter(a.tokens[int(np.argmax(a.significance))] for a in atts if len(a.tokens))
        m[f"{g}_top1_token_counts"] = dict(top1.most_common(8))
        m[f"{g}_mean_magnitude"] = float(np.mean([a.magnitude for a in atts])) if atts else float("nan")

    from ..metrics import ReplicationIndex

    index = ReplicationIndex(tb.data.images, tb.data.cluster)
    as_is = {g: _row_routes(backend, index, g, groups[g], cfg, m) for g in res.triggers if groups[g]}
    if groups["verbatim"]:
        res.edits = _edit_experiment(backend, index, groups["verbatim"], res.attributions["verbatim"], cfg, m,
                                     before=as_is["verbatim"])
        res.drops = _drop_control(backend, index, groups["verbatim"], res.triggers["verbatim"], cfg, m)
    m["checkpoint"] = tb.meta["sha256"]
    return res


def _integrated_metrics(g: str, ig: list[TokenSignificance], pos: list[list[int]],
                        wen: list[TokenSignificance]) -> dict:
    """Integrated gradients' top-2 rate, their completeness error, and how early on the path from e_empty to
    e_p the first-step magnitude saturates (for prompts Wen's first-step gradient ranks right and wrong)."""
    alphas = (np.arange(len(ig[0].path)) + 0.5) / len(ig[0].path)
    # first midpoint where the magnitude reaches 90 % of d(p): well below 1 means a saturated, flat end
    a90 = np.array([alphas[np.argmax(a.path >= 0.9 * a.magnitude)] if (a.path >= 0.9 * a.magnitude).any()
                    else 1.0 for a in ig])
    wen_hit = np.array([top2_hit(w.over_first(1).significance, t) for w, t in zip(wen, pos)])
    return {f"{g}_trigger_top2_rate_integrated": float(np.mean([top2_hit(a.significance, t)
                                                                  for a, t in zip(ig, pos)])),
            f"{g}_integrated_completeness_max_error": float(max(abs(a.all_rows_total / a.magnitude - 1) for a in ig)),
            # share of d(p) the EOS/padding rows carry (Wen's chart leaves them out)
            f"{g}_integrated_padding_share": float(np.mean([1 - a.significance.sum() / a.all_rows_total for a in ig])),
            f"{g}_path_alpha90_mean": float(a90.mean()),
            f"{g}_path_alpha90_wen_first_step_hits": float(a90[wen_hit].mean()) if wen_hit.any() else nan,
            f"{g}_path_alpha90_wen_first_step_misses": float(a90[~wen_hit].mean()) if (~wen_hit).any() else nan}


def _regenerate(backend, index, texts: list[str], clusters: list[int], cfg: ExplainConfig) -> dict:
    """Generate ``texts`` and measure, per prompt, replication of its planted cluster and the magnitude (all
    steps, Wen's detection default, and the first step alone, notebook 01's bar)."""
    gen_cfg = cfg.generation_config()
    g = generate(backend, texts, gen_cfg, progress=cfg.progress)
    rep = index.query(g.images.flatten(0, 1) * 2 - 1).replicated(np.repeat(clusters, gen_cfg.n_gens))
    return dict(replication=rep.reshape(len(texts), -1).mean(1), magnitude=wen_score(g.text_norm),
                first_step=wen_score(g.text_norm, n_steps=1))


def _row_routes(backend, index, g: str, prompts, cfg: ExplainConfig, m: dict) -> dict:
    """Regenerate the group's prompts with their EOS/padding rows, or their token rows, taken from the empty
    prompt (``memlib.embedding_rows``), from the same noise: replication and first-step magnitude of each.
    Returns the measurements of the prompts as they are (the edit experiment's "before")."""
    texts, clusters = [p.text for p in prompts], [p.cluster for p in prompts]
    measured = {}
    for label, be in [("full", backend)] + [(f"{rows}_rows_from_empty", RowSwapBackend(backend, rows))
                                            for rows in ROW_SETS]:
        measured[label] = _regenerate(be, index, texts, clusters, cfg)
        m[f"{g}_route_{label}_replication"] = float(measured[label]["replication"].mean())
        m[f"{g}_route_{label}_first_step_magnitude"] = float(measured[label]["first_step"].mean())
    return measured["full"]


def _edit_experiment(backend, index, verb, atts, cfg: ExplainConfig, m: dict, before: dict) -> list[dict]:
    """Drop each verbatim prompt's most significant token, and, as the ground-truth control, its planted
    trigger word; regenerate and measure replication and the magnitude (first step and all steps).
    ``before`` holds ``_regenerate``'s measurements of the prompts as they are."""
    variants = {"before": [p.text for p in verb],
                "after": [drop_token(backend.tokenizer, p.text, int(np.argmax(a.significance)))
                          for p, a in zip(verb, atts)],
                "trigger_dropped": [p.text[: -len(p.trigger)].rstrip() for p in verb]}
    clusters = [p.cluster for p in verb]
    measured = {"before": before} | {label: _regenerate(backend, index, variants[label], clusters, cfg)
                                     for label in ("after", "trigger_dropped")}
    rates, mags, first = ({label: v[k] for label, v in measured.items()}
                          for k in ("replication", "magnitude", "first_step"))
    keys = {"before": ("edit", "before"), "after": ("edit", "after"),
            "trigger_dropped": ("edit_trigger_dropped", "after")}
    for label, (prefix, when) in keys.items():
        m[f"{prefix}_replication_{when}"] = float(rates[label].mean())
        m[f"{prefix}_magnitude_{when}"] = float(mags[label].mean())
        m[f"{prefix}_first_step_magnitude_{when}"] = float(first[label].mean())
    for label in ("after", "trigger_dropped"):
        prefix = keys[label][0]
        m[f"{prefix}_magnitude_lowered_share"] = float(np.mean(mags[label] < mags["before"]))
        m[f"{prefix}_first_step_lowered_share"] = float(np.mean(first[label] < first["before"]))
    return [dict(prompt=p.text, edited=variants["after"][i], trigger=p.trigger,
                 **{f"{k}_{lab}": d[lab][i] for lab in ("before", "after", "trigger_dropped")
                    for k, d in (("magnitude", mags), ("first_step", first), ("replication", rates))})
            for i, p in enumerate(verb)]


def _drop_control(backend, index, verb, triggers, cfg: ExplainConfig, m: dict) -> list[dict]:
    """Is the planted trigger what the model memorized? Drop each token of each verbatim prompt in turn,
    regenerate, and measure replication. If it is, dropping one trigger piece breaks the copy far more often
    than dropping any other token; if every token matters alike (a memorized whole string), no attribution
    can single out the trigger, and the top-2 rate above measures nothing."""
    tok = backend.tokenizer
    pieces = [tok.token_strings(p.text)[: tok.n_tokens(p.text)] for p in verb]  # tokenized once per prompt
    rows = [(k, i, drop_token(tok, p.text, i)) for k, p in enumerate(verb) for i in range(len(pieces[k]))]
    rate = _regenerate(backend, index, [r[2] for r in rows], [verb[k].cluster for k, _, _ in rows], cfg)["replication"]
    is_trig = np.array([i in triggers[k] for k, i, _ in rows])
    k_of = np.array([k for k, _, _ in rows])
    kinds = np.array([_token_kind(pieces[k][i], t) for (k, i, _), t in zip(rows, is_trig)])
    m["drop_control_replication_trigger_piece"] = float(rate[is_trig].mean())
    m["drop_control_replication_other_token"] = float(rate[~is_trig].mean())
    m["drop_control_n_variants"] = {"trigger_piece": int(is_trig.sum()), "other_token": int((~is_trig).sum())}
    # the other tokens split: words naming the combination, and the rest ("at", "the", ",")
    m["drop_control_replication_by_kind"] = {kind: float(rate[kinds == kind].mean()) for kind in _KINDS
                                             if (kinds == kind).any()}
    # per prompt: does losing a trigger piece hurt replication more, on average, than losing another token?
    m["drop_control_trigger_more_necessary_share"] = float(np.mean(
        [rate[(k_of == k) & is_trig].mean() < rate[(k_of == k) & ~is_trig].mean() for k in range(len(verb))]))
    return [dict(prompt=verb[k].text, token=i, kind=kind, dropped=text, replication=float(r))
            for (k, i, text), kind, r in zip(rows, kinds, rate)]


_KINDS = ("trigger_piece", "content_word", "function_word")


def _token_kind(token: str, is_trigger: bool) -> str:
    """A verbatim prompt's token: a trigger piece, a word naming the combination, or a function word."""
    return _KINDS[0] if is_trigger else _KINDS[1] if token.replace("</w>", "") in _content_words() else _KINDS[2]


@lru_cache(maxsize=1)
def _content_words() -> frozenset[str]:
    from ..testbed.data import COLOURS, POSITIONS, SHAPES, SIZES

    return frozenset(COLOURS) | frozenset(SHAPES) | frozenset(SIZES) | {w for p in POSITIONS for w in p.split()}


def _run_real(cfg: ExplainConfig) -> ExplainResult:
    """SD backend: attributions and magnitudes only (no training set to measure replication against)."""
    from ..prompts import load_prompt_file

    prompts = load_prompt_file(cfg.prompts_file, "memorized")[: cfg.max_prompts or None]
    backend = make_backend(cfg.backend, seed=cfg.seed)
    res = ExplainResult({"memorized": explain_prompts(backend, prompts, cfg)}, {})
    res.metrics["memorized_mean_magnitude"] = float(np.mean([a.magnitude for a in res.attributions["memorized"]]))
    res.metrics["checkpoint"] = cfg.backend
    return res
