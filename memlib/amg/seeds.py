"""Notebook 04 on further testbeds (data and training seed s; Chen, Liu, Xu, CVPR 2024, AMG Main): does Main's
effect survive another model of the same design?

Per extra seed, on that seed's own halves: lambda_t calibrated on its held-out dev prompts as on seed 0 (the
switch is part of the method, fitted to the model it guards, as the registry's ``amg`` does); then on its test
half no mitigation, the content-caption reference (chance of nearest-is-planted), AMG Main at seed 0's dev-chosen
c3 and schedule (transfer) and at the c3 seed s's own dev sweep chooses over the same grid and schedule (the rule
of seed 0's Main). The same columns and paired intervals against no mitigation as seed 0.
"""
from __future__ import annotations

from dataclasses import replace

from ..mitigate.evalset import cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.run import open_testbed
from ..mitigate.similarity import SimilarityIndex
from .analysis import choose_c3, fired_share
from .calibrate import calibrate_testbed
from .methods import main_settings
from .privacy import compare
from .report_tables import OWN, TRANSFER
from .runner import Runner


def run_seed(cfg, seed: int, schedule: str, c3: float) -> tuple[dict, list]:
    """(metrics of testbed seed ``seed``, its rows for timings) with seed 0's Main at ``schedule``, ``c3``."""
    ref = replace(cfg.testbed, seed=seed)
    tb, backend, evaluator = open_testbed(ref, cfg)
    data = tb.data
    run = Runner(cfg, backend, evaluator)
    dev = cap_heldout(evaluation_prompts(data, "dev", max_per_group=cfg.max_prompts_per_group), cfg.heldout_prompts)
    test = cap_heldout(evaluation_prompts(data, "test", max_per_group=cfg.max_prompts_per_group),
                       cfg.heldout_prompts)
    cal = calibrate_testbed(backend, cfg.generation_config(cfg.calib_gens), cfg.calib_percentile,
                            cfg.max_prompts_per_group, cfg.progress)
    index = SimilarityIndex(data.images)

    def amg(value):
        return run.amg("amg", index, cal.threshold, main_settings(schedule, value, c1=cfg.c1, c2=cfg.c2))

    dev_mem = [p for p in dev if p.memorized]
    sweep = cfg.sweep()
    dev_rows = [run(amg(value), dev_mem, cfg.dev_gens).row for value in sweep]
    _, own_c3, _ = choose_c3({schedule: dev_rows}, sweep, cfg.rep_bar)

    none = run(make_method("none"), test, lowpass=True)
    reference = run.content_reference(test)
    runs = {"none": none, TRANSFER: run(amg(c3), test, lowpass=True)}
    runs[OWN] = runs[TRANSFER] if own_c3 == c3 else run(amg(own_c3), test, lowpass=True)
    groups = [p.group for p in test]
    metrics = {
        "checkpoint": tb.folder.name, "copy_detector": evaluator.detector.name, "calibration": cal.to_dict(),
        "schedule": schedule, "transfer_c3": c3, "own_c3": own_c3,
        "dev_sweep": [r.to_metrics() for r in dev_rows],
        "rows": {label: r.row.to_metrics() for label, r in runs.items()},
        "content_reference": reference.row.to_metrics(),
        "chance_nn_planted": reference.row.nn_is_planted["memorized"],
        "switch_fired_heldout": {label: fired_share(runs[label].info["amg_fired"], groups)
                                 for label in (TRANSFER, OWN)},
        "paired_vs_none": {label: compare(none.row, runs[label].row, seed=cfg.seed) for label in (TRANSFER, OWN)},
    }
    return metrics, run.rows
