"""PRSS (Chen et al., CVPR 2025) as methods of the mitigation harness (``memlib.mitigate``), knob lambda:

- ``prss_ss``: semantic prompt search alone (the chosen rewrite keeps the original's noise; plain CFG);
- ``prss_pr``: Wen's prompt-embedding optimization to lambda, then re-anchoring on the original prompt, as the
  released code's "PR alone" (PE + PR) does;
- ``prss``: the search, then re-anchoring on the original prompt for the prompts flagged at the first step.
The same lambda is PE's target, SS's threshold and PR's trigger, as in the paper's curves. tau and M (PR) come
from a ``PRSSSetup``; for the embedded testbed they are calibrated on its held-out dev prompts as notebook 05
calibrates them (``calibration_config``, ``TAU_PERCENTILE``, ``M_PERCENTILE``, ``PER_STEP_THRESHOLDS``; the
notebook's parameters default to these). Without a knob value, ``prss`` and ``prss_pr`` run at the lambda
notebook 05 chose on its development half, and ``prss_ss`` at PRSS's (the notebook gives SS alone no operating
point of its own).

On a model of your own:
- ``ReanchorHook`` / ``reanchor_weight``: prompt re-anchoring, a sampler hook pushing CFG away from the original
  prompt wherever the magnitude exceeds tau (weight rising from 1 at tau to the CFG scale at M);
- ``candidate_magnitudes`` / ``select`` / ``SearchTable``: semantic prompt search, the joint first-step magnitude
  of a prompt and its rewrites and the rewrite chosen at lambda;
- ``candidate_source``, ``TestbedParaphraser``, ``JsonlCandidates``: rewrite sources (the testbed grammar, the
  reference jsonl format ``caption1..captionK``, or any callable);
- ``PRSSSetup``, ``pr_thresholds``, ``heldout_norms``, ``testbed_setup``: calibration of tau and M from held-out
  magnitudes.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..generation import GenerationConfig
from ..mitigate.method import Context, Knob, Method, Plan
from ..mitigate.registry import register
from .calibrate import PRSSSetup, heldout_norms, pr_thresholds, testbed_setup  # noqa: F401  (re-exported)
from .paraphrase import JsonlCandidates, TestbedParaphraser, candidate_source  # noqa: F401  (re-exported)
from .reanchor import BRANCH, ReanchorHook, reanchor_weight  # noqa: F401  (re-exported)
from .search import SearchTable, candidate_magnitudes, select  # noqa: F401  (re-exported)

# Operating points notebook 05 chose on its development half (figures/05_prss/metrics.json: prss_lambda,
# pr_alone_lambda); tests/test_registry_defaults.py holds them to the committed run.
PRSS_LAMBDA = 1.8
PR_ALONE_LAMBDA = 1.35
# PR's calibration, as notebook 05 runs it (PRSSStudyConfig's defaults read these)
TAU_PERCENTILE = 95.0            # plain CFG below this percentile of held-out per-step magnitudes
M_PERCENTILE = 99.9              # full re-anchoring at this percentile
PER_STEP_THRESHOLDS = True       # tau and M per sampling step
CALIBRATION_GENS, CALIBRATION_SEED, CALIBRATION_BATCH = 4, 0, 128   # the held-out dev generations they come from

LAMBDA_KNOB = Knob("lambda", (4.0, 3.0, 2.5, 2.0, 1.5), 0.0, 1000.0)
VARIANTS = ("prss_ss", "prss_pr", "prss")
DEFAULT_LAMBDA = {"prss_ss": PRSS_LAMBDA, "prss_pr": PR_ALONE_LAMBDA, "prss": PRSS_LAMBDA}


def calibration_config(gen_cfg: GenerationConfig) -> GenerationConfig:
    """The plain-CFG generations of the held-out dev prompts that tau and M come from: notebook 05's generations
    per prompt, seed and batch, at ``gen_cfg``'s sampling steps and guidance (the thresholds are per step)."""
    return replace(gen_cfg, n_gens=CALIBRATION_GENS, seed=CALIBRATION_SEED, batch_size=CALIBRATION_BATCH)


def _pr_plan(ctx: Context, setup: PRSSSetup, texts: list[str], flagged: np.ndarray, **plan) -> Plan:
    G, S = ctx.gen_cfg.n_gens, ctx.gen_cfg.num_steps
    P = len(ctx.prompts)
    info = {f"pr_{k}": np.full((P, G, S), np.nan, np.float32) for k in ("a", "s", "p", "d")}
    record = {k: info[f"pr_{k}"].reshape(P * G, S) for k in ("a", "s", "p", "d")}
    with torch.no_grad():
        original = ctx.backend.encode_prompts(list(ctx.prompts))

    def branches(rows):
        if not flagged[np.asarray(rows) // G].any():
            return {}
        return {BRANCH: original[np.asarray(rows) // G]}

    def hooks(rows):
        return [ReanchorHook(setup.tau, setup.M, flagged[np.asarray(rows) // G], record, rows)]

    return Plan(texts, noise_keys=list(ctx.prompts), extra_hooks=hooks, branches=branches, info=info, **plan)


def prss_method(setup: PRSSSetup, lam: float, variant: str = "prss", name: str | None = None) -> Method:
    """``variant`` at lambda = ``lam``; ``name`` labels its rows (default: the variant)."""
    if variant not in VARIANTS:
        raise ValueError(f"PRSS variant {variant!r}: choose one of {VARIANTS}")

    def build(ctx: Context, value: float) -> Plan:
        if variant == "prss_pr":
            from ..wen.mitigate_pe import optimize_prompt_embeddings
            res = optimize_prompt_embeddings(ctx.backend, ctx.prompts, ctx.gen_cfg, value)
            flagged = res.loss_initial > value
            override = {p: res.embeddings[p] for p in np.flatnonzero(res.iterations > 0)}
            return _pr_plan(ctx, setup, list(ctx.prompts), flagged, cond_override=override, acted=flagged,
                            prep_seconds=res.seconds, prep_evals_per_image=res.evals_per_image)
        table = candidate_magnitudes(ctx.backend, list(ctx.prompts), candidate_source(setup.source), ctx.gen_cfg)
        texts, flagged, chosen = table.select(value)
        info = {"ss_chosen": chosen, "ss_magnitude": np.array([m[i] for m, i in zip(table.magnitudes, chosen)]),
                "ss_original_magnitude": np.array([m[0] for m in table.magnitudes])}
        if variant == "prss_ss":
            return Plan(texts, noise_keys=list(ctx.prompts), acted=chosen > 0, info=info,
                        prep_evals_per_image=table.evals_per_image)
        plan = _pr_plan(ctx, setup, texts, flagged, acted=flagged, prep_evals_per_image=table.evals_per_image)
        plan.info.update(info)
        return plan

    return Method(name or variant, LAMBDA_KNOB, LAMBDA_KNOB.check(variant, lam), build, params=setup.params(),
                  description={"prss_ss": "PRSS: semantic prompt search", "prss_pr": "PRSS: PE + re-anchoring",
                               "prss": "PRSS: search + re-anchoring"}[variant])


def _registered(variant: str):
    def build(ctx: Context, lam: float) -> Plan:
        setup = testbed_setup(ctx.backend, calibration_config(ctx.gen_cfg), "testbed", TAU_PERCENTILE, M_PERCENTILE,
                              PER_STEP_THRESHOLDS)
        return prss_method(setup, lam, variant).build(ctx, lam)
    return build


for _v in VARIANTS:
    register(_v, replace(LAMBDA_KNOB, default=DEFAULT_LAMBDA[_v]), _registered(_v), scope="testbed",
             description=f"PRSS ({_v}), tau and M calibrated on the testbed as notebook 05 does")
