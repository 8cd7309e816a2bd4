"""What notebook 04's ``run_study`` returns (Chen, Liu, Xu, CVPR 2024): the dev-half checks and choices, the
test-half rows with their paired comparisons, the descriptor-sigma variant, the further testbeds and the digits;
``to_metrics`` (no wall-clock seconds: those go to ``timings``) and ``claims`` (``report.claims`` on the metrics)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..claims import Claim
from ..mitigate.evalset import MEMORIZED_GROUPS
from .analysis import fired_share, memorized_replication
from .report import claims as report_claims
from .report_tables import DESCRIPTOR_ROW


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
    reference: object = None                       # the content-caption reference row (test half, memorized)
    paired_vs_none: dict = field(default_factory=dict)
    paired_vs_main: dict = field(default_factory=dict)
    descriptor: dict = field(default_factory=dict)  # the descriptor-sigma variant's choices and comparisons
    seeds: dict = field(default_factory=dict)       # further testbeds: seed -> metrics
    copy_detector: str = ""
    traces: dict = field(default_factory=dict, repr=False)
    groups: list = field(default_factory=list, repr=False)
    digits: dict = field(default_factory=dict)
    siblings: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict, repr=False)
    matched: dict = field(default_factory=dict)
    computed_rows: list = field(default_factory=list, repr=False)   # every MethodRow scored, for timings

    def fired_share(self, label: str = "AMG Main", group: str = "heldout") -> float:
        """Share of the group's test generations where the switch fired at some step."""
        return fired_share(self.traces[label]["fired"], self.groups, group)

    def claims(self) -> list[Claim]:
        """The paper's claims as this run measured them (``report.claims`` on ``to_metrics()``)."""
        return report_claims(self.to_metrics())

    def to_metrics(self) -> dict:
        """What ``write_metrics`` stores (no wall-clock seconds; ``timings``)."""
        none, amg = self.rows["none"], self.rows["AMG Main"]
        rel = lambda a, b: (a - b) / b if b else float("nan")
        fd_n, fd_a = none.frechet.get("heldout"), amg.frechet.get("heldout")
        rows = {label: row.to_metrics() for label, row in self.rows.items()}
        if DESCRIPTOR_ROW in rows:
            rows[DESCRIPTOR_ROW]["gamed_columns"] = ["copy_rate"]   # it optimised the copy detector's similarity
        chance = self.reference.nn_is_planted["memorized"] if self.reference is not None else float("nan")
        return {
            "checkpoint": self.checkpoint, "copy_detector": self.copy_detector, "calibration": self.calibration,
            "main_schedule": self.main_schedule, "main_c3": self.main_c3, "strong_c3": self.strong_c3,
            "copy_rate_none": none.copy_rate["memorized"], "copy_rate_amg": amg.copy_rate["memorized"],
            "copy_rate_none_ci95": list(none.copy_rate_ci["memorized"]),
            "copy_rate_amg_ci95": list(amg.copy_rate_ci["memorized"]),
            "lowpass_replication_none": none.lowpass_replication["memorized"],
            "lowpass_replication_amg": amg.lowpass_replication["memorized"],
            "nn_is_planted_none": none.nn_is_planted["memorized"], "nn_is_planted_amg": amg.nn_is_planted["memorized"],
            "nn_is_planted_chance": chance,
            "replication_rate_none": memorized_replication(none), "replication_rate_amg": memorized_replication(amg),
            "replication_rate_none_ci95": list(none.replication_ci["memorized"]),
            "replication_rate_amg_ci95": list(amg.replication_ci["memorized"]),
            "clip_score_none": none.clip_content["memorized"], "clip_score_amg": amg.clip_content["memorized"],
            "clip_content_change_amg": rel(amg.clip_content["memorized"], none.clip_content["memorized"]),
            "clip_phrasings_none": none.clip_phrasings["memorized"],
            "clip_phrasings_amg": amg.clip_phrasings["memorized"],
            "clip_heldout_none": none.clip_content["heldout"], "clip_heldout_amg": amg.clip_content["heldout"],
            "fd_none": fd_n, "fd_amg": fd_a, "fd_floor": none.frechet_floor.get("heldout"),
            "fd_heldout_change_amg": rel(fd_a, fd_n),
            "fd_memorized_none": none.frechet.get("memorized"), "fd_memorized_amg": amg.frechet.get("memorized"),
            "switch_fired_heldout": self.fired_share(), "switch_fired_memorized": self.fired_share(group="memorized"),
            "evals_per_image_none": none.evals_per_image, "evals_per_image_amg": amg.evals_per_image,
            "evals_ratio_amg": amg.evals_per_image / none.evals_per_image,
            "digits_uncond_reduction": self.digits["unconditional"].reduction(),
            "digits_class_reduction": self.digits["class-conditional"].reduction(),
            "digits": {k: d.to_metrics() for k, d in self.digits.items()},
            "sigma_auc_per_step": list(self.sigma_auc_per_step),
            "guidance_1": self.guidance_1, "y_n_rules": self.y_n_rules, "siblings": self.siblings,
            "dev_none": self.dev_none, "dev_sweep": self.dev_sweep, "matched_to_03": self.matched,
            "rows": rows, "content_reference": self.reference.to_metrics() if self.reference is not None else {},
            "paired_vs_none": self.paired_vs_none, "paired_vs_main": self.paired_vs_main,
            "descriptor_sigma": self.descriptor, "seeds": self.seeds,
        }

    def timings(self) -> dict:
        """Wall-clock seconds (timings.json): per image and AMG Main over CFG, the digits runs, and every row."""
        none, amg = self.rows["none"], self.rows["AMG Main"]
        digits = {name: {label: r["seconds_per_image"] for label, r in d.seconds.items()}
                  for name, d in self.digits.items()}
        rows = [r.timings() for r in self.computed_rows]
        rows += [{"label": f"digits {name}, {label}", "seconds_per_image": r["seconds_per_image"], "images": r["n"]}
                 for name, d in self.digits.items() for label, r in d.seconds.items()]
        return {"seconds_per_image_none": none.seconds_per_image, "seconds_per_image_amg": amg.seconds_per_image,
                "seconds_ratio_amg": amg.seconds_per_image / none.seconds_per_image,
                "seconds_per_image": {label: r.seconds_per_image for label, r in self.rows.items()},
                "digits_seconds_per_image": digits, "rows": rows}

    def table(self):
        """The test-half rows as a DataFrame (the notebook's table and ``amg_rows.csv``)."""
        import pandas as pd

        cols = []
        for label, r in self.rows.items():
            cols.append({"method": label, "copy rate": r.copy_rate.get("memorized"),
                         "replication": memorized_replication(r),
                         "low-pass replication": r.lowpass_replication.get("memorized"),
                         **{f"rep {g}": r.replication.get(g) for g in MEMORIZED_GROUPS},
                         "NN planted": r.nn_is_planted["memorized"], "NCC": r.similarity_mean["memorized"],
                         "CLIP content (mem)": r.clip_content["memorized"],
                         "CLIP phrasings (mem)": r.clip_phrasings.get("memorized"),
                         "CLIP content (held-out)": r.clip_content["heldout"],
                         "retrieval": r.retrieval_top1["memorized"], "FD mem": r.frechet.get("memorized"),
                         "FD held-out": r.frechet.get("heldout"), "evals/img": r.evals_per_image})
        return pd.DataFrame(cols).set_index("method")
