"""Notebook 03's typed results: the mitigation table, PE's operating point (chosen on the dev half), the
matched-utility comparison of PE against random-token addition (Wen et al. 2024, Fig. 4a claims PE's curve
dominates it), the rebound of the magnitude after PE, the training-time filter table, and the same methods on
further testbed seeds. Paired intervals (``memlib.mitigate.columns.paired``: b minus a over the same prompts and
noises, resampling planted images) back every comparison. The README rows, the results block's tables and the
claims are computed from ``to_metrics()`` in ``mitigation_report``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..claims import Claim
from ..generation import GenerationConfig
from ..mitigate.columns import MethodRow, paired
from ..mitigate.evalset import MEMORIZED_GROUPS
from ..paired_bootstrap import paired_difference
from .mitigation_report import claims as report_claims


def _pooled(row: MethodRow) -> float:
    return row.replication.get("memorized", float("nan"))


def _ci95(ci: dict) -> list | None:
    return list(ci["memorized"]) if "memorized" in ci else None


def operating_point(none: MethodRow, rows: list[MethodRow], bar: float) -> float | None:
    """The largest knob value (the weakest setting: PE's l_target, the filter's tau) whose pooled memorized
    replication is at most (1 - bar) x the unmitigated rate (on the rows given: the dev half); else the value with
    the lowest replication."""
    if not rows:
        return None
    base = _pooled(none)
    ok = [r for r in rows if base > 0 and _pooled(r) <= (1 - bar) * base]
    if ok:
        return max(r.value for r in ok)
    return min(rows, key=lambda r: (_pooled(r), -r.value)).value


def _paired_or_none(a: MethodRow, b: MethodRow, column: str, group: str = "memorized", relative: bool = False):
    """``paired(...).to_dict()``, or None where the rows cannot say (no such prompts, a column not scored, a
    relative change of a zero rate)."""
    sel = np.isin(a.groups, MEMORIZED_GROUPS) if group == "memorized" else a.groups == group
    if not sel.any():
        return None
    try:
        return paired(a, b, column, group=group, relative=relative).to_dict()
    except ValueError:
        return None


def paired_summary(base: MethodRow, row: MethodRow) -> dict:
    """``row`` against ``base`` over the same prompts and noises: the change of each privacy column, of pooled and
    per-group pixel replication, and of every-phrasing CLIP on memorized and held-out prompts (None where a column
    cannot be compared)."""
    out = {"copy": _paired_or_none(base, row, "copy"),
           "replication": _paired_or_none(base, row, "replication"),
           "replication_relative": _paired_or_none(base, row, "replication", relative=True),
           "nn_planted": _paired_or_none(base, row, "nn_planted"),
           "clip_content": _paired_or_none(base, row, "clip_content"),
           "clip_phrasings": _paired_or_none(base, row, "clip_phrasings"),
           "clip_phrasings_heldout": _paired_or_none(base, row, "clip_phrasings", group="heldout")}
    out.update({f"replication_{g}": _paired_or_none(base, row, "replication", group=g) for g in MEMORIZED_GROUPS})
    return out


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


def _phrasings(r: MethodRow) -> float:
    return r.clip_phrasings.get("memorized", float("nan"))


def interpolated(rows: list[MethodRow], level: float, column: str, sel: np.ndarray) -> np.ndarray:
    """Per-prompt ``column`` (prompts ``sel``) of the curve through ``rows`` at every-phrasing CLIP ``level``: the
    two rows around it, weighted as linear interpolation between their mean CLIP weights them."""
    rows = sorted(rows, key=_phrasings)
    xs = np.array([_phrasings(r) for r in rows])
    j = int(np.searchsorted(xs, level))
    if j == 0 or j >= len(rows):
        return np.asarray(rows[min(j, len(rows) - 1)].per_prompt[column], float)[sel]
    w = (level - xs[j - 1]) / (xs[j] - xs[j - 1])
    lo, hi = (np.asarray(rows[k].per_prompt[column], float)[sel] for k in (j - 1, j))
    return (1 - w) * lo + w * hi


def matched_paired(pe: list[MethodRow], rt: list[MethodRow], none: MethodRow, levels: int = 4) -> dict:
    """PE against random-token addition at ``levels`` every-phrasing CLIP values inside both curves' range (each
    curve: its knob values plus no mitigation). At each level both curves are interpolated prompt by prompt, so
    the copy rate and the NCC to the planted image of PE and of random tokens are paired over the same prompts and
    noises; ``paired_copy`` / ``paired_similarity``: PE minus random tokens averaged over the levels, with an
    interval resampling planted images."""
    out: dict = {"utility": "clip_phrasings", "levels": [], "copy_pe": [], "copy_random_token": [],
                 "similarity_pe": [], "similarity_random_token": [], "paired_copy": None,
                 "paired_similarity": None, "n_levels": levels}
    if not pe or not rt:
        return out
    cp, cr = [none] + list(pe), [none] + list(rt)
    lo = max(min(map(_phrasings, cp)), min(map(_phrasings, cr)))
    hi = min(max(map(_phrasings, cp)), max(map(_phrasings, cr)))
    if not hi > lo:
        out["note"] = "the two curves do not overlap in every-phrasing CLIP"
        return out
    lv = np.linspace(lo, hi, levels + 2)[1:-1]
    out["levels"] = lv.tolist()
    sel = np.isin(none.groups, MEMORIZED_GROUPS)
    for col in ("copy", "similarity"):
        a = np.array([interpolated(cr, x, col, sel) for x in lv])
        b = np.array([interpolated(cp, x, col, sel) for x in lv])
        out[f"{col}_pe"], out[f"{col}_random_token"] = b.mean(1).tolist(), a.mean(1).tolist()
        try:
            out[f"paired_{col}"] = paired_difference(a.mean(0), b.mean(0), none.units[sel]).to_dict()
        except ValueError:    # a column not scored (no copy detector)
            pass
    return out


@dataclass
class SeedResult:
    """The methods on another testbed seed's test half: seed 0's dev-chosen operating points carried over
    (``pe_transfer`` and each baseline at its chosen value) and this seed's own dev-chosen l_target
    (``pe_own``), against no mitigation on the same prompts and noises."""
    seed: int
    checkpoint: str
    l_targets: list[float]
    dev_magnitudes: dict[str, np.ndarray]
    dev_rows: list[MethodRow]                   # dev half: none, then PE at each l_target
    pe_operating_l_target: float | None         # this seed's own dev choice
    transfer_l_target: float | None             # seed 0's dev choice
    rows: dict[str, MethodRow]                  # 'none', 'pe_transfer', 'pe_own', then each baseline
    content_reference: MethodRow | None
    paired: dict[str, dict] = field(default_factory=dict)   # each row but 'none' against 'none'

    def computed_rows(self) -> list[MethodRow]:
        return self.dev_rows + list(self.rows.values()) + ([self.content_reference] if self.content_reference else [])

    def to_metrics(self) -> dict:
        ref = self.content_reference
        return {"checkpoint": self.checkpoint, "l_targets": self.l_targets,
                "pe_operating_l_target": self.pe_operating_l_target, "pe_transfer_l_target": self.transfer_l_target,
                "dev_median_magnitude": {g: float(np.median(v)) for g, v in self.dev_magnitudes.items()},
                "nn_planted_chance": None if ref is None else ref.nn_is_planted.get("memorized"),
                "content_reference": None if ref is None else ref.to_metrics(),
                "rows": {k: r.to_metrics() for k, r in self.rows.items()},
                "dev_rows": [r.to_metrics() for r in self.dev_rows], "paired": self.paired}


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
    content_reference: MethodRow | None = None  # plain CFG on the content captions: the chance of column (c)
    chosen: dict[str, MethodRow] = field(default_factory=dict)    # each method's row at its chosen value
    paired: dict[str, dict] = field(default_factory=dict)         # each chosen row against no mitigation
    matched_paired: dict = field(default_factory=dict)
    filter_dev_rows: list[MethodRow] = field(default_factory=list)   # dev half: unfiltered, then each tau
    filter_chosen_tau: float | None = None
    filter_paired: dict | None = None          # the chosen tau against the unfiltered run (test half)
    seeds: dict[int, SeedResult] = field(default_factory=dict)
    reduction_bar: float = float("nan")        # the dev rule's relative reduction (PE's l_target, the filter's tau)

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

    def filter_chosen(self) -> MethodRow | None:
        """The filtered run at the tau chosen on the dev half (test half)."""
        return next((r for r in self.filter_rows if r.method == "wen_filter" and r.value == self.filter_chosen_tau),
                    None)

    def _pe_metrics(self) -> dict:
        none, pe = self.none, self.pe
        if pe is None:
            return {}
        rel = self.paired.get("wen_pe", {}).get("replication_relative")
        return {"pe_replication_rate": _pooled(pe), "pe_replication_rate_ci95": list(pe.replication_ci["memorized"]),
                "pe_replication_reduction": 1 - _pooled(pe) / _pooled(none) if _pooled(none) > 0 else None,
                "pe_replication_reduction_ci95": None if rel is None else [-rel["ci95"][1], -rel["ci95"][0]],
                "pe_copy_rate": pe.copy_rate.get("memorized"),
                "pe_copy_rate_ci95": _ci95(pe.copy_rate_ci),
                "pe_clip_content": pe.clip_content["memorized"],
                "pe_content_clip_cost": none.clip_content["memorized"] - pe.clip_content["memorized"],
                "pe_heldout_clip_content_cost": none.clip_content["heldout"] - pe.clip_content["heldout"],
                "pe_clip_phrasings": pe.clip_phrasings.get("memorized"),
                "pe_clip_phrasings_cost": none.clip_phrasings["memorized"] - pe.clip_phrasings["memorized"],
                "pe_heldout_clip_phrasings_cost": none.clip_phrasings["heldout"] - pe.clip_phrasings["heldout"],
                "pe_evals_per_image": pe.evals_per_image, "pe_acted_heldout": pe.acted_heldout}

    def _filter_metrics(self) -> dict:
        m = {"filter_taus": {f"p{p:g}": t for p, t in self.taus.items()},
             "filter_drops": {f"tau{t:g}": d for t, d in self.filter_drops.items()},
             "filter_chosen_tau": self.filter_chosen_tau, "filter_paired": self.filter_paired,
             "filter_rows": [r.to_metrics() for r in self.filter_rows],
             "filter_dev_rows": [r.to_metrics() for r in self.filter_dev_rows]}
        chosen = self.filter_chosen()
        if chosen is not None:
            unf = self.filter_rows[0]
            m.update({"filter_copy_rate": chosen.copy_rate.get("memorized"),
                      "filter_copy_rate_ci95": _ci95(chosen.copy_rate_ci),
                      "filter_unfiltered_copy_rate": unf.copy_rate.get("memorized"),
                      "filter_unfiltered_copy_rate_ci95": _ci95(unf.copy_rate_ci),
                      "filter_replication_rate": _pooled(chosen), "filter_unfiltered_replication_rate": _pooled(unf)})
        return m

    def to_metrics(self) -> dict:
        none = self.none
        ref = self.content_reference
        m: dict = {"n_gens": self.gen_cfg.n_gens, "seed": self.gen_cfg.seed, "guidance_scale": self.gen_cfg.guidance_scale,
                   "num_steps": self.gen_cfg.num_steps, "half": "test", "checkpoint": self.checkpoint,
                   "l_targets": self.l_targets, "pe_operating_l_target": self.pe_operating_l_target,
                   "pe_reduction_bar": self.reduction_bar,
                   "replication_rate_none": _pooled(none), "replication_rate_none_ci95": list(none.replication_ci["memorized"]),
                   "copy_rate_none": none.copy_rate.get("memorized"),
                   "copy_rate_none_ci95": _ci95(none.copy_rate_ci),
                   "clip_content_none": none.clip_content["memorized"],
                   "clip_phrasings_none": none.clip_phrasings.get("memorized"),
                   "evals_per_image_none": none.evals_per_image,
                   "nn_planted_chance": None if ref is None else ref.nn_is_planted.get("memorized"),
                   "content_reference": None if ref is None else ref.to_metrics(),
                   "dev_median_magnitude": {g: float(np.median(v)) for g, v in self.dev_magnitudes.items()}}
        m.update(self._pe_metrics())
        if self.zero_iteration:
            m.update({f"pe_{k}": v for k, v in self.zero_iteration.items()})
        m["rebound_memorized"] = {k: [float(x) for x in v] for k, v in self.rebound.items()}
        m["rebound_heldout"] = {k: [float(x) for x in v] for k, v in self.rebound_heldout.items()}
        m["pe_vs_random_token_wins"] = self.matched.get("wins")
        m["matched_utility"] = self.matched
        m["matched_utility_phrasings"] = self.matched_paired
        m["chosen_points"] = {name: {"knob": r.knob, "value": r.value, "paired": self.paired.get(name)}
                              for name, r in self.chosen.items()}
        m["probe_timesteps"] = self.probe.timesteps
        m["probe_auc"] = self.probe.auc
        m["probe_n_rows_per_side"] = self.probe.n_planted
        m.update(self._filter_metrics())
        m["rows"] = [r.to_metrics() for r in self.rows]
        m["dev_rows"] = [r.to_metrics() for r in self.dev_rows]
        m["seeds"] = {str(s): res.to_metrics() for s, res in self.seeds.items()}
        return m

    def claims(self) -> list[Claim]:
        return report_claims(self.to_metrics())

    def computed_rows(self) -> list[MethodRow]:
        """Every row this run scored, once each."""
        rows = self.rows + self.dev_rows + self.filter_rows + self.filter_dev_rows + (
            [self.content_reference] if self.content_reference else [])
        rows += [r for s in self.seeds.values() for r in s.computed_rows()]
        return list({id(r): r for r in rows}.values())

    def timings(self) -> dict:
        """Wall-clock cost for timings.json: every row's seconds per image and images, and PE's against none."""
        none, pe = self.none, self.pe
        out = {"rows": [r.timings() for r in self.computed_rows()],
               "seconds_per_image_none": none.seconds_per_image}
        if pe is not None:
            out.update(pe_seconds_per_image=pe.seconds_per_image,
                       pe_seconds_ratio=pe.seconds_per_image / none.seconds_per_image)
        return out

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
