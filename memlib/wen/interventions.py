"""Notebook 02's interventions on the testbed: regenerate prompts after an edit and measure replication of the
planted image and Wen et al.'s magnitude (ICLR 2024, Sec. 3.1) before and after.

- row routes: the prompt's EOS/padding rows, or its token rows, taken from the empty prompt (``memlib.wen.rows``);
- the edit: each verbatim prompt's most significant token dropped (Wen's Sec. 3.2 use of the attribution), with
  the planted trigger dropped as the control;
- the drop control: every token of every verbatim prompt dropped in turn, the ground truth for attribution;
- padding controls: the same row routes on held-out prompts (does emptying the EOS/padding rows remove what the
  prompt asks for, memorized or not?), and, prompt by prompt, the padding route of Wen's hits against its misses.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..generation import GenerationConfig, generate
from .attribution import TokenSignificance, drop_token
from .explain_results import ContentRouteStats, DropControlStats, EditStats, PaddingLinkStats, RouteStats
from .rows import ROW_SETS, RowSwapBackend
from .scores import wen_score

TOKEN_KINDS = ("trigger_piece", "content_word", "function_word")


def regenerate(backend, index, texts: list[str], clusters: list[int], gen_cfg: GenerationConfig,
               progress: bool = True) -> dict[str, np.ndarray]:
    """Generate ``texts`` and measure, per prompt, replication of its planted cluster and the magnitude (all
    steps, Wen's detection default, and the first step alone, notebook 01's bar)."""
    g = generate(backend, texts, gen_cfg, progress=progress)
    rep = index.query(g.images.flatten(0, 1) * 2 - 1).replicated(np.repeat(clusters, gen_cfg.n_gens))
    return dict(replication=rep.reshape(len(texts), -1).mean(1), magnitude=wen_score(g.text_norm),
                first_step=wen_score(g.text_norm, n_steps=1))


def _route_backends(backend) -> list[tuple[str, object]]:
    return [("full", backend)] + [(f"{rows}_rows_from_empty", RowSwapBackend(backend, rows)) for rows in ROW_SETS]


def row_routes(backend, index, prompts, gen_cfg: GenerationConfig, progress: bool = True):
    """Regenerate the prompts as they are and with their EOS/padding rows, or their token rows, taken from the
    empty prompt, from the same noise. Returns ({label: RouteStats}, {label: per-prompt measurements})."""
    texts, clusters = [p.text for p in prompts], [p.cluster for p in prompts]
    measured = {label: regenerate(be, index, texts, clusters, gen_cfg, progress)
                for label, be in _route_backends(backend)}
    stats = {label: RouteStats(float(v["replication"].mean()), float(v["first_step"].mean()))
             for label, v in measured.items()}
    return stats, measured


def content_routes(backend, clip, prompts, gen_cfg: GenerationConfig, progress: bool = True) -> dict:
    """The row routes on held-out prompts, which nothing memorized: per route, the share of generations the
    testbed CLIP retrieves as the prompt's own combination, their CLIP score against the prompt, and the
    first-step magnitude. If emptying the EOS/padding rows removes a held-out prompt's content as thoroughly as
    it removes a verbatim prompt's copy, those rows carry prompt content in general, not memorization only."""
    from ..testbed.data import canonical_caption

    texts = [p.text for p in prompts]
    vocab = sorted(backend.testbed.data.combos_train + backend.testbed.data.combos_heldout)
    out = {}
    for label, be in _route_backends(backend):
        g = generate(be, texts, gen_cfg, progress=progress)
        feats = clip.image_features(g.images.flatten(0, 1) * 2 - 1)
        caps = [t for t in texts for _ in range(gen_cfg.n_gens)]
        hits = [r == canonical_caption(t) for r, t in zip(clip.retrieve(feats, vocab), caps)]
        out[label] = ContentRouteStats(n_prompts=len(texts), top1_retrieval=float(np.mean(hits)),
                                       clip_score=float(np.mean(clip.score(feats, caps))),
                                       first_step_magnitude=float(wen_score(g.text_norm, n_steps=1).mean()))
    return out


def padding_link(hits: list[bool], padding_share: np.ndarray, measured: dict[str, dict[str, np.ndarray]],
                 texts: list[str]) -> tuple[PaddingLinkStats, list[dict]]:
    """Prompt by prompt: do the prompts Wen's attribution misses send more of the memorized key through the
    EOS/padding rows? Per prompt, the integrated-gradients share of d(p) on those rows and the replication left
    when they are emptied, averaged over hits and over misses. Returns (stats, one row per prompt)."""
    hit = np.asarray(hits, bool)
    kept = measured["padding_rows_from_empty"]["replication"]
    only_padding = measured["prompt_rows_from_empty"]["replication"]

    def mean(x, mask):
        return float(x[mask].mean()) if mask.any() else float("nan")

    stats = PaddingLinkStats(
        n_hits=int(hit.sum()), n_misses=int((~hit).sum()),
        padding_share_hits=mean(padding_share, hit), padding_share_misses=mean(padding_share, ~hit),
        replication_token_rows_only_hits=mean(kept, hit), replication_token_rows_only_misses=mean(kept, ~hit),
        replication_padding_rows_only_hits=mean(only_padding, hit),
        replication_padding_rows_only_misses=mean(only_padding, ~hit))
    rows = [dict(prompt=t, wen_top2_hit=bool(h), integrated_padding_share=float(s),
                 replication_as_is=float(measured["full"]["replication"][i]),
                 replication_token_rows_only=float(kept[i]), replication_padding_rows_only=float(only_padding[i]))
            for i, (t, h, s) in enumerate(zip(texts, hit, padding_share))]
    return stats, rows


def _edit_stats(before: dict, after: dict) -> EditStats:
    return EditStats(
        replication_before=float(before["replication"].mean()), replication_after=float(after["replication"].mean()),
        magnitude_before=float(before["magnitude"].mean()), magnitude_after=float(after["magnitude"].mean()),
        first_step_magnitude_before=float(before["first_step"].mean()),
        first_step_magnitude_after=float(after["first_step"].mean()),
        magnitude_lowered_share=float(np.mean(after["magnitude"] < before["magnitude"])),
        first_step_lowered_share=float(np.mean(after["first_step"] < before["first_step"])))


def edit_experiment(backend, index, verb, atts: list[TokenSignificance], gen_cfg: GenerationConfig, before: dict,
                    progress: bool = True) -> tuple[EditStats, EditStats, list[dict]]:
    """Drop each verbatim prompt's most significant token and, as the ground-truth control, its planted trigger;
    regenerate and measure. ``before`` holds ``regenerate``'s measurements of the prompts as they are.
    Returns (top token dropped, trigger dropped, one row per prompt)."""
    variants = {"after": [drop_token(backend.tokenizer, p.text, int(np.argmax(a.significance)))
                          for p, a in zip(verb, atts)],
                "trigger_dropped": [p.text[: -len(p.trigger)].rstrip() for p in verb]}
    clusters = [p.cluster for p in verb]
    measured = {"before": before} | {label: regenerate(backend, index, texts, clusters, gen_cfg, progress)
                                     for label, texts in variants.items()}
    rows = [dict(prompt=p.text, edited=variants["after"][i], trigger=p.trigger,
                 **{f"{k}_{lab}": measured[lab][key][i] for lab in ("before", "after", "trigger_dropped")
                    for k, key in (("magnitude", "magnitude"), ("first_step", "first_step"),
                                   ("replication", "replication"))})
            for i, p in enumerate(verb)]
    return (_edit_stats(before, measured["after"]), _edit_stats(before, measured["trigger_dropped"]), rows)


def drop_control(backend, index, verb, triggers: list[list[int]], gen_cfg: GenerationConfig,
                 progress: bool = True) -> tuple[DropControlStats, list[dict]]:
    """Is the planted trigger what the model memorized? Drop each token of each verbatim prompt in turn,
    regenerate, and measure replication. If it is, dropping one trigger piece breaks the copy far more often
    than dropping any other token; if every token matters alike (a memorized whole string), no attribution
    can single out the trigger, and the top-2 rate measures nothing."""
    tok = backend.tokenizer
    pieces = [tok.token_strings(p.text)[: tok.n_tokens(p.text)] for p in verb]  # tokenized once per prompt
    rows = [(k, i, drop_token(tok, p.text, i)) for k, p in enumerate(verb) for i in range(len(pieces[k]))]
    rate = regenerate(backend, index, [r[2] for r in rows], [verb[k].cluster for k, _, _ in rows], gen_cfg,
                      progress)["replication"]
    is_trig = np.array([i in triggers[k] for k, i, _ in rows])
    k_of = np.array([k for k, _, _ in rows])
    kinds = np.array([token_kind(pieces[k][i], t) for (k, i, _), t in zip(rows, is_trig)])
    stats = DropControlStats(
        replication_trigger_piece=float(rate[is_trig].mean()),
        replication_other_token=float(rate[~is_trig].mean()),
        n_variants={"trigger_piece": int(is_trig.sum()), "other_token": int((~is_trig).sum())},
        # the other tokens split: words naming the combination, and the rest ("at", "the", ",")
        replication_by_kind={kind: float(rate[kinds == kind].mean()) for kind in TOKEN_KINDS if (kinds == kind).any()},
        # per prompt: does losing a trigger piece hurt replication more, on average, than losing another token?
        trigger_more_necessary_share=float(np.mean(
            [rate[(k_of == k) & is_trig].mean() < rate[(k_of == k) & ~is_trig].mean() for k in range(len(verb))])))
    table = [dict(prompt=verb[k].text, token=i, kind=kind, dropped=text, replication=float(r))
             for (k, i, text), kind, r in zip(rows, kinds, rate)]
    return stats, table


def token_kind(token: str, is_trigger: bool) -> str:
    """A verbatim prompt's token: a trigger piece, a word naming the combination, or a function word."""
    if is_trigger:
        return TOKEN_KINDS[0]
    return TOKEN_KINDS[1] if token.replace("</w>", "") in _content_words() else TOKEN_KINDS[2]


@lru_cache(maxsize=1)
def _content_words() -> frozenset[str]:
    from ..testbed.data import COLOURS, POSITIONS, SHAPES, SIZES

    return frozenset(COLOURS) | frozenset(SHAPES) | frozenset(SIZES) | {w for p in POSITIONS for w in p.split()}
