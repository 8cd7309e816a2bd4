"""Notebook 02's report (Wen et al., ICLR 2024, Sec. 3.2: token attribution): the README rows, the table and
numbers of its results block, and the claims as measured, all from the metrics dict alone (``memlib results``
rebuilds them from the committed ``figures/02_explain/metrics.json``). The block's sentences live in
``docs/templates/02_explain.md``.

Verdicts use only the intervals the metrics hold: Wilson 95 % intervals over prompts for Wen's rates. A rate of
another method (or a chance level) is compared with Wen's interval; a difference between two means the metrics
hold no interval for is not distinguishable."""
from __future__ import annotations

import math

from ..claims import Claim, verdict

WITHDRAWN_BAR = 0.80   # the top-2 rate once set as a target; withdrawn, so shown beside the rate and never tested
GROUPS = ("verbatim", "caption_dup")   # the planted groups whose prompts carry a trigger word
NAN = float("nan")

# The README's results table (``memlib results``): (metric key written by ``to_metrics``, what it is, target)
HEADLINES = [
    ("verbatim_trigger_top2_rate_wen_exact",
     "trigger token in top-2 of Wen's attribution, exact setting (all steps, batch norm), seed 0 test half",
     "report (bar withdrawn)"),
    ("verbatim_trigger_top2_rate_wen_exact_pooled",
     "... pooled over the testbed seeds' test halves (`per_seed` in the metrics)", "report"),
    ("verbatim_trigger_top2_rate", "... attribution window S (default: the same setting), all prompts", "report"),
    ("verbatim_trigger_top2_rate_window_test",
     "... window of the first k steps chosen on the dev half (`verbatim_chosen_window_dev`), test half", "report"),
    ("verbatim_trigger_top2_rate_reference_trajectory",
     "... on the reference code's trajectory (swapped guidance on attributed steps), test half", "report"),
    ("verbatim_trigger_top2_chance_test", "... a random ranking's rate (chance level), test half", "report"),
    ("verbatim_trigger_top2_rate_occlusion", "... cross-check: drop each token, first-step loss",
     "report"),
    ("verbatim_trigger_top2_rate_integrated",
     "... cross-check: integrated gradients from the empty prompt, first step", "report"),
    ("verbatim_trigger_top2_rate_input_embedding",
     "... cross-check: Wen's gradient norm at the encoder's input embeddings, first step", "report"),
    ("verbatim_integrated_padding_share", "share of d(p) on EOS/padding rows (integrated gradients)",
     "report"),
    ("verbatim_route_prompt_rows_from_empty_replication",
     "replication with the prompt's token rows emptied (EOS/padding rows kept)", "report"),
    ("verbatim_route_padding_rows_from_empty_replication",
     "replication with the EOS/padding rows emptied (token rows kept)", "report"),
    ("verbatim_padding_link_padding_share_hits",
     "... per prompt: that share for prompts Wen's exact attribution ranks right", "report"),
    ("verbatim_padding_link_padding_share_misses", "... and for the prompts it misses", "report"),
    ("heldout_route_full_top1_retrieval", "held-out control: generations retrieved as their combination", "report"),
    ("heldout_route_padding_rows_from_empty_top1_retrieval", "... with the EOS/padding rows emptied", "report"),
    ("drop_control_replication_trigger_piece",
     "ground truth: replication after dropping one trigger piece", "report"),
    ("drop_control_replication_other_token", "... after dropping one other token", "report"),
    ("edit_first_step_lowered_share", "share whose first-step magnitude falls after the edit",
     "report"),
    ("edit_replication_before", "replication before dropping the top token", "report"),
    ("edit_replication_after", "replication after dropping the top token", "report"),
]


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def above_interval(value: float, ci) -> bool | None:
    """True if ``value`` lies above the interval ``ci``, False if below it, None if inside (or unmeasured)."""
    if not (ci and _finite(value, *ci)):
        return None
    return True if value > ci[1] else False if value < ci[0] else None


def pooled_chance(m: dict, group: str = "verbatim") -> float:
    """A random ranking's top-2 rate over every testbed seed's test half (the seeds' chance levels weighted by
    their test prompts), the level ``*_wen_exact_pooled`` is compared with."""
    halves = [s[group] for s in m.get("per_seed", {}).values() if group in s and s[group]["n_test"]]
    n = sum(h["n_test"] for h in halves)
    return sum(h["chance_test"] * h["n_test"] for h in halves) / n if n else NAN


def num_steps(m: dict, group: str = "verbatim") -> int | float:
    """The sampling steps of the run: the longest window the dev half chose among (always all steps)."""
    ks = [int(k) for k in m.get(f"{group}_trigger_top2_rate_window_dev_by_k", {})]
    return max(ks) if ks else NAN


def _chance_claim(name: str, what: str, m: dict, key: str, chance: float, n_key: str) -> Claim:
    """The trigger ranked in the top 2 more often than chance: Wen's interval lies above the chance level."""
    rate, ci = m.get(key, NAN), m.get(f"{key}_ci95")
    above = above_interval(chance, ci)   # chance above Wen's interval: Wen ranks the trigger below chance
    return Claim(name, "Wen's attribution ranks a piece of the planted trigger in the top 2 more often than a "
                       f"random ranking ({what})",
                 verdict(None if above is None else not above, measured=_finite(rate, chance) and bool(ci)),
                 {"rate": rate, "rate_ci95": ci, "chance": chance, "n_prompts": m.get(n_key),
                  "withdrawn_bar": WITHDRAWN_BAR})


def _beats_wen(name: str, method: str, m: dict, key: str) -> Claim:
    """A cross-check ranks the trigger in the top 2 more often than Wen's gradient on the same (all) prompts."""
    other, wen = m.get(key, NAN), m.get("verbatim_trigger_top2_rate", NAN)
    ci = m.get("verbatim_trigger_top2_rate_ci95")
    return Claim(name, f"the trigger is in the top 2 more often under {method} than under Wen's gradient "
                       "(verbatim, all prompts)",
                 verdict(above_interval(other, ci), measured=_finite(other, wen) and bool(ci)),
                 {"cross_check": other, "wen": wen, "wen_ci95": ci, "n_prompts": m.get("verbatim_n_prompts")})


def _window_claim(m: dict) -> Claim:
    """A shorter window chosen on the dev half beats Wen's all-step setting on the test half. If the dev half
    chose all steps, it found no shorter window better: the claim does not hold."""
    k, steps = m.get("verbatim_chosen_window_dev", NAN), num_steps(m)
    window = m.get("verbatim_trigger_top2_rate_window_test", NAN)
    exact = m.get("verbatim_trigger_top2_rate_wen_exact", NAN)
    ci = m.get("verbatim_trigger_top2_rate_wen_exact_ci95")
    better = False if k == steps else above_interval(window, ci)
    return Claim("window_beats_exact", "a window of the first k steps, chosen on the dev half, ranks the trigger "
                 "in the top 2 more often than Wen's all-step setting (verbatim, test half)",
                 verdict(better, measured=_finite(k, steps, window, exact) and bool(ci)),
                 {"chosen_window": k, "num_steps": steps, "window_test": window, "wen_exact": exact,
                  "wen_exact_ci95": ci, "dev_rates_by_k": m.get("verbatim_trigger_top2_rate_window_dev_by_k")})


def _drop_claim(m: dict) -> Claim:
    """The drop control: a trigger piece is more necessary than the other tokens, on average and for most
    prompts (the metrics hold no interval for these rates; the per-prompt share carries the verdict). Where no
    variant copies at all, there is no copy to break: not measured."""
    trig = m.get("drop_control_replication_trigger_piece", NAN)
    other = m.get("drop_control_replication_other_token", NAN)
    share = m.get("drop_control_trigger_more_necessary_share", NAN)
    measured = _finite(trig, other, share) and max(trig, other) > 0
    return Claim("trigger_is_the_key", "the trigger is the memorized key: dropping one trigger piece breaks the "
                 "copy more often than dropping another token (drop control, verbatim)",
                 verdict(trig < other and share > 0.5, measured=measured),
                 {"replication_trigger_piece": trig, "replication_other_token": other,
                  "trigger_more_necessary_share": share, "n_variants": m.get("drop_control_n_variants")})


def _hypothesis(name: str, claim: str, hits: float, misses: float, evidence: dict) -> Claim:
    """A hypothesis about Wen's misses, read as a difference between its misses and hits. The metrics hold no
    interval for those means, so the difference is never supported: not distinguishable, once measured."""
    return Claim(name, f"hypothesis: {claim}", verdict(None, measured=_finite(hits, misses)),
                 {"hits": hits, "misses": misses, **evidence})


def claims(m: dict) -> list[Claim]:
    """Wen's attribution against chance (seed 0 and pooled over seeds), the dev-chosen window, the drop control,
    the two cross-checks, and the two hypotheses for Wen's misses, as notebook 02 measured them."""
    v = "verbatim"
    sat = {k: m.get(f"{v}_path_alpha90_{k}", NAN) for k in ("mean", "wen_first_step_hits", "wen_first_step_misses")}
    link = {k: m.get(f"{v}_padding_link_{k}", NAN) for k in (
        "n_hits", "n_misses", "padding_share_hits", "padding_share_misses", "replication_token_rows_only_hits",
        "replication_token_rows_only_misses")}
    routes = {k: m.get(f"{v}_route_{k}_replication", NAN) for k in (
        "full", "prompt_rows_from_empty", "padding_rows_from_empty")}
    heldout = {k: m.get(f"heldout_route_{k}_top1_retrieval", NAN) for k in (
        "full", "prompt_rows_from_empty", "padding_rows_from_empty")}
    return [
        _chance_claim("above_chance", "exact setting, testbed seed 0, test half", m,
                      f"{v}_trigger_top2_rate_wen_exact", m.get(f"{v}_trigger_top2_chance_test", NAN), f"{v}_n_test"),
        _chance_claim("above_chance_pooled", "exact setting, every testbed seed's test half pooled", m,
                      f"{v}_trigger_top2_rate_wen_exact_pooled", pooled_chance(m, v), f"{v}_n_test_pooled"),
        _window_claim(m),
        _drop_claim(m),
        _beats_wen("occlusion_beats_wen", "occlusion", m, f"{v}_trigger_top2_rate_occlusion"),
        _beats_wen("integrated_beats_wen", "integrated gradients from the empty prompt", m,
                   f"{v}_trigger_top2_rate_integrated"),
        _hypothesis("saturation_explains_misses", "the prompts Wen's first-step gradient misses saturate earlier "
                    "on the path from the empty prompt's embedding (a at 90 % of d(p) lower for misses than hits)",
                    sat["wen_first_step_hits"], sat["wen_first_step_misses"], {"alpha90_mean": sat["mean"]}),
        _hypothesis("padding_route_explains_misses", "the prompts Wen's exact attribution misses send more of d(p) "
                    "through the EOS/padding rows (integrated-gradients share larger for misses than hits)",
                    link["padding_share_hits"], link["padding_share_misses"],
                    {**link, "integrated_padding_share": m.get(f"{v}_integrated_padding_share", NAN),
                     "replication_by_route": routes, "heldout_top1_retrieval_by_route": heldout}),
    ]


def _rate(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci95")
    if not _finite(v):
        return "n/a"
    return f"{v:.3f}" + (" [{:.3f}, {:.3f}]".format(*ci) if ci and _finite(*ci) else "")


def attribution_table(m: dict) -> str:
    """Top-2 rates of the trigger per attribution method and trigger group (Wen's settings on the test half
    with Wilson intervals, the cross-checks on all prompts)."""
    groups = [g for g in GROUPS if f"{g}_n_prompts" in m]
    if not groups:
        return "no trigger group was attributed"
    rows = [("Wen, exact setting: all steps, L_t one norm over the batch (test half)", "trigger_top2_rate_wen_exact"),
            ("... pooled over every testbed seed's test half", "trigger_top2_rate_wen_exact_pooled"),
            ("chance: a random ranking (test half)", "trigger_top2_chance_test"),
            ("Wen, window of the first k steps chosen on the dev half (test half)", "trigger_top2_rate_window_test"),
            ("Wen, reference code's trajectory (test half)", "trigger_top2_rate_reference_trajectory"),
            ("Wen, window S of the bars (all prompts)", "trigger_top2_rate"),
            ("chance (all prompts)", "trigger_top2_chance"),
            ("occlusion, first step (all prompts)", "trigger_top2_rate_occlusion"),
            ("integrated gradients from the empty prompt, first step (all prompts)", "trigger_top2_rate_integrated"),
            ("Wen's gradient at the encoder's input embeddings, first step (all prompts)",
             "trigger_top2_rate_input_embedding")]
    out = ["| trigger in the top 2 (share of prompts, [95 % CI]) | " + " | ".join(groups) + " |",
           "|---" * (len(groups) + 1) + "|"]
    for label, key in rows:
        cells = [_rate(m, f"{g}_{key}") for g in groups]
        if key == "trigger_top2_rate_window_test":
            cells = [f"k = {m.get(f'{g}_chosen_window_dev')}: {c}" for g, c in zip(groups, cells)]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("| prompts: dev / test (all); test pooled over seeds | " + " | ".join(
        f"{m.get(f'{g}_n_dev')} / {m.get(f'{g}_n_test')} ({m.get(f'{g}_n_prompts')}); {m.get(f'{g}_n_test_pooled')}"
        for g in groups) + " |")
    return "\n".join(out)


def values(m: dict) -> dict:
    """The table and derived numbers of the results block (``docs/templates/02_explain.md``), from metrics alone."""
    v = "verbatim"
    dev = m.get(f"{v}_trigger_top2_rate_window_dev_by_k", {})
    seeds = m.get("per_seed", {})
    return {
        "attribution_table": attribution_table(m),
        "withdrawn_bar": WITHDRAWN_BAR,
        "num_steps": num_steps(m),
        "verbatim_pooled_chance": pooled_chance(m, v),
        "testbed_seeds_shown": ", ".join(str(s) for s in m.get("testbed_seeds", [])),
        "verbatim_rate_per_seed": "; ".join(f"seed {s}: {h[v]['wen_exact']:.3f} of {h[v]['n_test']}"
                                            for s, h in seeds.items() if v in h) or "n/a",
        "verbatim_dev_rates_by_k": ", ".join(f"k = {k}: {r:.3f}" for k, r in
                                             sorted(dev.items(), key=lambda kr: int(kr[0]))) or "n/a",
        "drop_n_trigger_piece": m.get("drop_control_n_variants", {}).get("trigger_piece", 0),
        "drop_n_other_token": m.get("drop_control_n_variants", {}).get("other_token", 0),
        "drop_content_word": m.get("drop_control_replication_by_kind", {}).get("content_word", NAN),
        "drop_function_word": m.get("drop_control_replication_by_kind", {}).get("function_word", NAN),
    }
