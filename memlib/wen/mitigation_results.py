"""Notebook 03's typed results: the mitigation table, PE's operating point (chosen on the dev half), the
matched-utility comparison of PE against random-token addition (Wen et al. 2024, Fig. 4a claims PE's curve
dominates it), the rebound of the magnitude after PE, and the training-time filter table. The README rows, the
results block's tables and the claims are computed from ``to_metrics()`` in ``mitigation_report``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..claims import Claim
from ..generation import GenerationConfig
from ..mitigate.columns import MethodRow
from .mitigation_report import claims as report_claims


def _pooled(row: MethodRow) -> float:
    return row.replication.get("memorized", float("nan"))


def pe_operating_point(none: MethodRow, pe_rows: list[MethodRow], bar: float) -> float | None:
    """The largest l_target whose pooled memorized replication is at most (1 - bar) x the unmitigated rate
    (on the rows given: the dev half); else the l_target with the lowest replication."""
    if not pe_rows:
        return None
    base = _pooled(none)
    ok = [r for r in pe_rows if base > 0 and _pooled(r) <= (1 - bar) * base]
    if ok:
        return max(r.value for r in ok)
    return min(pe_rows, key=lambda r: (_pooled(r), -r.value)).value


def _curve(rows: list[MethodRow], none: MethodRow, y: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r.clip_content["memorized"], (r.similarity_mean if y == "similarity" else r.replication)["memorized"])
           for r in [none] + rows]
    pts.sort()
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def matched_comparison(pe: list[MethodRow], rt: list[MethodRow], none: MethodRow, levels: int = 4) -> dict:
    """PE against random-token addition at ``levels`` content-CLIP values inside both curves' range.

    Each curve (its knob values plus no mitigation, sorted by content CLIP on memorized prompts) is linearly
    interpolated; PE wins a level where its similarity to the planted image is lower."""
    out: dict = {"levels": [], "similarity_pe": [], "similarity_random_token": [], "replication_pe": [],
                 "replication_random_token": [], "wins": None, "n_levels": levels}
    if not pe or not rt:
        return out
    xs_pe, ys_pe = _curve(pe, none, "similarity")
    xs_rt, ys_rt = _curve(rt, none, "similarity")
    lo, hi = max(xs_pe.min(), xs_rt.min()), min(xs_pe.max(), xs_rt.max())
    if not hi > lo:
        out["note"] = "the two curves do not overlap in content CLIP"
        return out
    lv = np.linspace(lo, hi, levels + 2)[1:-1]
    out["levels"] = lv.tolist()
    out["similarity_pe"] = np.interp(lv, xs_pe, ys_pe).tolist()
    out["similarity_random_token"] = np.interp(lv, xs_rt, ys_rt).tolist()
    out["replication_pe"] = np.interp(lv, *_curve(pe, none, "replication")).tolist()
    out["replication_random_token"] = np.interp(lv, *_curve(rt, none, "replication")).tolist()
    out["wins"] = int(sum(a < b for a, b in zip(out["similarity_pe"], out["similarity_random_token"])))
    return out


@dataclass
class MitigationResult:
    rows: list[MethodRow]                       # test half: every method at every knob value
    l_targets: list[float]
    dev_magnitudes: dict[str, np.ndarray]       # L_p(e_p) per dev prompt, by group
    dev_rows: list[MethodRow]                   # dev half: none, then PE at each l_target
    pe_operating_l_target: float | None
    zero_iteration: dict | None
    rebound: dict[str, np.ndarray]              # mean per-step magnitude, memorized test prompts, by label
    rebound_heldout: dict[str, np.ndarray]
    timesteps: list[int]
    matched: dict
    grid: dict
    probe: object                               # filter_train.ProbeResult
    taus: dict[float, float]                    # percentile -> tau
    filter_rows: list[MethodRow]                # the unfiltered run ('unfiltered'), then each tau
    filter_drops: dict[float, dict]
    gen_cfg: GenerationConfig
    checkpoint: str
    pe_iterations: dict[str, np.ndarray] = field(default_factory=dict)
    test_groups: list[str] = field(default_factory=list)

    def row(self, method: str, value=None) -> MethodRow | None:
        for r in self.rows:
            if r.method == method and (value is None or r.value == value):
                return r
        return None

    @property
    def none(self) -> MethodRow:
        return self.row("none")

    @property
    def pe(self) -> MethodRow | None:
        return self.row("wen_pe", self.pe_operating_l_target) if self.pe_operating_l_target is not None else None

    def filter_best(self) -> MethodRow | None:
        filt = [r for r in self.filter_rows if r.method == "wen_filter"]
        return min(filt, key=lambda r: r.replication.get("verbatim", 1.0)) if filt else None

    def to_metrics(self) -> dict:
        none, pe = self.none, self.pe
        m: dict = {"n_gens": self.gen_cfg.n_gens, "seed": self.gen_cfg.seed, "guidance_scale": self.gen_cfg.guidance_scale,
                   "num_steps": self.gen_cfg.num_steps, "half": "test", "checkpoint": self.checkpoint,
                   "l_targets": self.l_targets, "pe_operating_l_target": self.pe_operating_l_target,
                   "replication_rate_none": _pooled(none), "replication_rate_none_ci95": list(none.replication_ci["memorized"]),
                   "clip_content_none": none.clip_content["memorized"],
                   "seconds_per_image_none": none.seconds_per_image, "evals_per_image_none": none.evals_per_image,
                   "dev_median_magnitude": {g: float(np.median(v)) for g, v in self.dev_magnitudes.items()}}
        if pe is not None:
            m.update({"pe_replication_rate": _pooled(pe), "pe_replication_rate_ci95": list(pe.replication_ci["memorized"]),
                      "pe_replication_reduction": 1 - _pooled(pe) / _pooled(none) if _pooled(none) > 0 else None,
                      "pe_clip_content": pe.clip_content["memorized"],
                      "pe_content_clip_cost": none.clip_content["memorized"] - pe.clip_content["memorized"],
                      "pe_heldout_clip_content_cost": none.clip_content["heldout"] - pe.clip_content["heldout"],
                      "pe_seconds_per_image": pe.seconds_per_image, "pe_evals_per_image": pe.evals_per_image,
                      "pe_acted_heldout": pe.acted_heldout})
        if self.zero_iteration:
            m.update({f"pe_{k}": v for k, v in self.zero_iteration.items()})
        m["rebound_memorized"] = {k: [float(x) for x in v] for k, v in self.rebound.items()}
        m["rebound_heldout"] = {k: [float(x) for x in v] for k, v in self.rebound_heldout.items()}
        m["pe_vs_random_token_wins"] = self.matched.get("wins")
        m["matched_utility"] = self.matched
        m["probe_timesteps"] = self.probe.timesteps
        m["probe_auc"] = self.probe.auc
        m["probe_n_rows_per_side"] = self.probe.n_planted
        m["filter_taus"] = {f"p{p:g}": t for p, t in self.taus.items()}
        m["filter_drops"] = {f"tau{t:g}": d for t, d in self.filter_drops.items()}
        best = self.filter_best()
        if best is not None:
            unf = self.filter_rows[0]
            m.update({"filter_best_tau": best.value, "filter_best_verbatim_replication": best.replication["verbatim"],
                      "filter_unfiltered_verbatim_replication": unf.replication["verbatim"]})
        m["rows"] = [r.to_metrics() for r in self.rows]
        m["dev_rows"] = [r.to_metrics() for r in self.dev_rows]
        m["filter_rows"] = [r.to_metrics() for r in self.filter_rows]
        return m

    def claims(self) -> list[Claim]:
        return report_claims(self.to_metrics())

    def cost_rows(self) -> list[MethodRow]:
        """No mitigation, each method at its largest knob value, and PE at its operating point."""
        top = {m: max(r.value for r in self.rows if r.method == m) for m in {r.method for r in self.rows}}
        cost = [r for r in self.rows if r.method == "none" or r.value == top[r.method]]
        return cost + ([self.pe] if self.pe and self.pe not in cost else [])

    def rebound_summary(self, late: slice = slice(1, 11)) -> dict[str, tuple[float, float]]:
        """Per label ('none' and PE's): the memorized prompts' mean magnitude at x_T and over steps 1-10
        (``late``)."""
        return {label: (float(c[0]), float(c[late].mean())) for label, c in self.rebound.items()}

    def table(self, rows: list[MethodRow] | None = None) -> list[dict]:
        """Flat rows for ``write_table`` (one per method and knob value)."""
        flat = [{k: v for k, v in r.to_metrics().items() if not isinstance(v, (list, dict))}
                for r in (rows if rows is not None else self.rows)]
        keys = list(dict.fromkeys(k for f in flat for k in f))   # methods add their own extra columns
        return [{k: f.get(k, "") for k in keys} for f in flat]
