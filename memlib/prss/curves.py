"""The curves notebook 05 traces (PRSS, Chen et al., CVPR 2025) and the dev-half choices behind them, shared by
the main testbed and every further testbed seed.

- ``calibrate``: lambda spans the held-out to the memorized median first-step magnitude on the dev half
  (notebook 03's l_target sweep, PE's units, so one lambda serves PE, SS and PR); tau_t and M_t come from
  held-out dev magnitudes at each step (``memlib.prss.calibrate``).
- ``dev_operating``: a curve's operating lambda is the dev lambda whose held-out content CLIP is highest among
  those bringing dev verbatim replication (the paper's pixel criterion) to ``verbatim_bar``. The independent
  copy detector plays no part in any choice.
"""
from __future__ import annotations

import numpy as np

from ..first_step_magnitude import joint_first_step, l_target_sweep
from ..mitigate import baselines as _baselines  # noqa: F401  (registers "none")
from ..mitigate.registry import make_method
from ..wen import methods as _wen_methods  # noqa: F401  (registers "wen_pe")
from .calibrate import PRSSSetup, heldout_norms, pr_thresholds
from .methods import prss_method
from .results import choose_operating_lambda

CURVES = [("PE", "wen_pe"), ("PR alone", "prss_pr"), ("SS alone", "prss_ss"), ("PRSS", "prss")]
DROP_CURVES = [("SS alone, may drop trigger", "prss_ss"), ("PRSS, may drop trigger", "prss")]
OPERATED = ("PR alone", "PRSS", "PRSS, may drop trigger")   # curves given an operating lambda on the dev half
OWN_ON_MORE_SEEDS = ("PRSS", "PRSS, may drop trigger")     # ... chosen again on a further seed's dev half


def curve_specs(cfg) -> list[tuple[str, str]]:
    """(curve, variant) of every curve the configuration traces."""
    specs = list(CURVES)
    if cfg.drop_trigger_curves and cfg.source != "testbed-drop-trigger":
        specs += DROP_CURVES
    return specs


def curve_method(curve: str, variant: str, lam: float, tau, M, source: str):
    """The method drawing ``curve`` at lambda = ``lam`` with PR's thresholds ``tau`` and ``M``."""
    if variant == "wen_pe":
        return make_method("wen_pe", lam)
    if "drop" in curve:
        return prss_method(PRSSSetup(tau, M, "testbed-drop-trigger"), lam, variant, name=variant + "_drop")
    return prss_method(PRSSSetup(tau, M, source), lam, variant)


def calibrate(backend, dev, gen, cfg) -> tuple[list[float], object, object, np.ndarray]:
    """(lambdas, tau, M, each dev prompt's joint first-step magnitude) from the dev half."""
    dev_mag = joint_first_step(backend, [p.text for p in dev], gen)
    mem = np.array([p.memorized for p in dev])
    lambdas = l_target_sweep(dev_mag[mem], dev_mag[~mem], cfg.lambda_points)
    tau, M = pr_thresholds(heldout_norms(backend, gen), cfg.tau_percentile, cfg.m_percentile,
                           cfg.per_step_thresholds)
    return lambdas, tau, M, dev_mag


def dev_operating(run, specs, dev, lambdas, tau, M, cfg, which=OPERATED) -> tuple[dict, dict]:
    """({curve: its dev rows, one per lambda}, {curve: operating lambda}) for the curves in ``which``;
    ``run(method, prompts, n_gens)`` generates and scores."""
    dev_rows, operating = {}, {}
    for curve, variant in specs:
        if curve in which:
            dev_rows[curve] = [run(curve_method(curve, variant, lam, tau, M, cfg.source), dev, cfg.dev_gens).row
                               for lam in lambdas]
            operating[curve] = choose_operating_lambda(dev_rows[curve], cfg.verbatim_bar)
    return dev_rows, operating
