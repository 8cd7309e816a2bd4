"""The notebooks, one row each: what ``make reproduce``, ``memlib results`` and the notebook tests iterate over.

A notebook is added by adding its row here (and its paper package); nothing else lists the notebooks by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# tiny testbed shared by the quick runs of notebooks 00-05
_QUICK_TESTBED = dict(testbed_preset="tiny", testbed_train_steps=20, testbed_clip_steps=20)


@dataclass(frozen=True)
class Notebook:
    stem: str                 # notebooks/<stem>.ipynb, figures/<stem>/
    package: str              # the memlib module whose HEADLINES name its headline metrics
    question: str             # what it answers, for the README's table
    headline: str             # the one metric key the README shows ...
    label: str                # ... and what it measures
    figure: str               # the one figure the README shows (figures/<stem>/<figure>)
    quick: dict = field(default_factory=dict)   # tiny parameters: make reproduce QUICK=1 and make test
    before: str = ""          # a metric key shown before the headline ("before -> after"), when there is one
    block: str = ""           # the name of its generated block in docs/results.md


NOTEBOOKS: tuple[Notebook, ...] = (
    Notebook("00_testbed", "memlib.testbed.evaluate",
             "Does the testbed copy exactly what was planted, and nothing held out?",
             "verbatim_replication_rate", "planted verbatim prompts that copy their image", "replication_by_group.png",
             dict(_QUICK_TESTBED, n_gens=2, num_steps=5, progress=False)),
    Notebook("01_detection", "memlib.wen.detection_report",
             "Does Wen's first-step text-conditional noise magnitude detect memorized prompts?",
             "auc_first_step_1gen", "AUC, memorized vs held-out prompts (first step, 1 generation, mean of 3 seeds)",
             "roc.png",
             dict(_QUICK_TESTBED, more_testbed_seeds="1", positive_groups="verbatim", n_generic=16,
                  n_random=12, max_prompts=12, n_boot=50, max_gens=2, num_steps=10, batch_size=64,
                  timing_prompts=2, progress=False),
             block="detection"),
    Notebook("02_explain", "memlib.wen.explain_report",
             "Does Wen's token attribution rank the planted trigger in its top 2?",
             "verbatim_trigger_top2_rate_wen_exact", "verbatim prompts whose trigger is in the top 2 (Wen's exact setting)",
             "drop_control.png",
             dict(_QUICK_TESTBED, n_gens=2, num_steps=3, max_prompts=2, illustrate_prompts=1, ig_points=4,
                  control_prompts=2, more_testbed_seeds="1", progress=False),
             block="explain"),
    Notebook("03_mitigation", "memlib.wen.mitigation_report",
             "How much copying do Wen's embedding optimization and training filter remove, at what utility?",
             "pe_copy_rate", "memorized prompts the independent copy detector calls copies, none → PE at its "
             "dev-chosen target",
             "privacy_utility.png",
             dict(_QUICK_TESTBED, n_gens=2, num_steps=4, max_prompts_per_group=4, pe_points=3,
                  baselines="random_token,lower_guidance", filter_percentiles="50,90", probe_rows=16,
                  grid_prompts=3, more_testbed_seeds="", progress=False),
             before="copy_rate_none", block="mitigation"),
    Notebook("04_amg", "memlib.amg.report",
             "Does AMG's detection-switched guidance remove copies, and what does each term add?",
             "copy_rate_amg", "memorized prompts the independent copy detector calls copies, none → AMG Main",
             "ablations.png",
             dict(_QUICK_TESTBED, n_gens=2, num_steps=3, max_prompts_per_group=3, heldout_prompts=3,
                  calib_gens=4, dev_gens=1, c3_sweep="10,100", digits_train_steps=6, digits_samples=20,
                  digits_steps=3, digits_c3_sweep="1,10", grid_prompts=3, progress=False),
             before="copy_rate_none", block="amg"),
    Notebook("05_prss", "memlib.prss.report",
             "Do prompt re-anchoring and semantic search remove verbatim copies at held-out utility?",
             "prss_copy_rate", "memorized prompts the independent copy detector calls copies, none → PRSS with "
             "meaning-preserving rewrites", "privacy_utility.png",
             dict(_QUICK_TESTBED, n_gens=1, num_steps=3, max_prompts_per_group=3, heldout_prompts=3,
                  lambda_points=2, dev_gens=1, grid_prompts=3, more_testbed_seeds="", progress=False),
             before="copy_rate_none", block="prss"),
    Notebook("06_ietagc", "memlib.ietagc.report",
             "Does IET-AGC+ training lower memorization at equal sample visits and fidelity?",
             "copy_rate_full", "samples the independent copy detector calls copies, baseline → full IET-AGC+ (digits)",
             "frontier.png",
             dict(steps=16, batch_size=16, shards=2, rounds=2, ranks=1, seeds="0", frontier_points=2,
                  probe_samples=32, max_images=200, n_duplicated=4, copies=4, eval_samples=32, sample_steps=5,
                  loss_noises=1, mem_threshold=0.15),
             before="copy_rate_baseline", block="ietagc"),
)

BY_STEM: dict[str, Notebook] = {nb.stem: nb for nb in NOTEBOOKS}
QUICK_PARAMS: dict[str, dict] = {nb.stem: nb.quick for nb in NOTEBOOKS}
