"""Notebook 05's typed results (PRSS, Chen et al., CVPR 2025): every curve point, the paper's comparisons with
paired intervals (``memlib.prss.paired``), the per-step magnitudes (the paper: PE's magnitude rebounds after the
first step, re-anchoring's does not) and the further testbed seeds (``memlib.prss.seeds``).

Privacy has three columns (``memlib.mitigate.columns``): (a) the paper's pixel criterion (Gu-ratio replication),
(b) the independent copy detector's copy rate, the headline and the privacy axis of every comparison, and (c)
the share whose nearest training image is the planted one, beside its chance level (the content-caption
reference row). Utility is the mean testbed CLIP over every phrasing of the content combination (a reference a
rewrite cannot emit verbatim), with content-caption CLIP beside it. Wall-clock seconds go to timings.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mitigate.columns import MethodRow
from ..mitigate.evalset import MEMORIZED_GROUPS
from . import judge
from .paired import comparisons, late_magnitudes, rebound_paired, summary, vs_none

REP, CLIP, HELD = "replication_memorized", "clip_content_memorized", "clip_content_heldout"
COPY, PHRASINGS = "copy_rate_memorized", "clip_phrasings_memorized"


def choose_operating_lambda(dev_rows: list[MethodRow], verbatim_bar: float) -> float:
    """The dev lambda with the highest held-out content CLIP among those whose dev verbatim replication is at most
    ``verbatim_bar``; else the lambda with the lowest verbatim replication (ties: the larger lambda)."""
    if not dev_rows:
        raise ValueError("choosing lambda needs at least one dev row")
    ok = [r for r in dev_rows if r.replication.get("verbatim", np.inf) <= verbatim_bar]
    if ok:
        return max(ok, key=lambda r: (r.clip_content["heldout"], r.value)).value
    return min(dev_rows, key=lambda r: (r.replication.get("verbatim", np.inf), -r.value)).value


def committed_references(cfg) -> dict:
    """AMG (notebook 04: none, Main, Strong) and the augmentation baselines (notebook 03) as curves of metric rows
    from the committed runs, when those ran the same prompts, noises and settings."""
    from ..mitigate.reference_runs import committed_metrics

    out = {"curves": {}, "sources": {}}
    m3, info3 = committed_metrics("03_mitigation", cfg)
    out["sources"]["03_mitigation"] = info3
    if m3 is not None:
        for r in m3["rows"]:
            if r["method"] not in ("none", "wen_pe"):
                out["curves"].setdefault(r["method"], []).append(r)
        out["none_03"] = next((r for r in m3["rows"] if r["method"] == "none"), None)
    m4, info4 = committed_metrics("04_amg", cfg)
    out["sources"]["04_amg"] = info4
    if m4 is not None:
        out["guidance_1_verbatim_dev"] = m4.get("guidance_1", {}).get("replication_verbatim")
        out["curves"]["AMG"] = [dict(m4["rows"][k], knob="c3", value=c) for k, c in
                                (("AMG Main", m4["main_c3"]), ("AMG Strong", m4["strong_c3"])) if k in m4["rows"]]
    return out


def curve_xy(points: list[dict], none: dict, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((p[x], p[y]) for p in [none] + list(points))
    return np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)


def interp_inside(level: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    return float(np.interp(level, xs, ys)) if xs.min() <= level <= xs.max() else None


def reference_values(curves: dict[str, list[dict]], none: dict, x: str, y: str, levels: list[float]) -> dict:
    """Each committed reference curve's mean ``y`` at the ``levels`` of ``x`` (None outside the curve; curves
    whose rows lack a column are left out): from means only, so no paired interval."""
    out = {}
    for name, pts in curves.items():
        if all(x in p and y in p for p in pts) and pts:
            xs, ys = curve_xy(pts, none, x, y)
            out[name] = [interp_inside(v, xs, ys) for v in levels]
    return out


def per_step(text_norm: np.ndarray, select: np.ndarray) -> list[float]:
    """Mean magnitude per step over the selected prompts' generations."""
    return np.nanmean(text_norm[select].reshape(-1, text_norm.shape[-1]), axis=0).tolist()


def rebound_summary(curve: list[float]) -> dict:
    c = np.asarray(curve, float)
    half = len(c) // 2
    return {"first": float(c[0]), "late_mean": float(c[half:].mean()), "max_after_first": float(c[1:].max()),
            "rebound": float(c[1:].max() - c[0])}


def anchor_gap(info: dict, prompts) -> dict:
    """Per group, the mean over steps where re-anchoring's branch ran of ||eps_s - eps_p|| / ||eps_p - eps_0||:
    near 0, the prompt in use predicts what the original does and re-anchoring only lowers the guidance scale."""
    ratio = np.asarray(info["pr_d"], float) / np.maximum(np.asarray(info["pr_p"], float), 1e-12)
    groups = np.array([p.group for p in prompts])
    out = {}
    for g in MEMORIZED_GROUPS + ("heldout",):
        r = ratio[groups == g]
        out[g] = float(np.nanmean(r)) if np.isfinite(r).any() else None
    return out


# PRSS per candidate source; the template calls the first "the faithful reading" (a meaning-preserving rewrite
# keeps the trigger, as the paper's GPT-4 rewrites keep named entities) and the second "removes the memorized key
# (upper bound)"
SOURCES = {"trigger-keeping rewrites": ("PRSS", "SS alone"),
           "rewrites that may drop the trigger": ("PRSS, may drop trigger", "SS alone, may drop trigger")}
# every curve's prefix in the flat metrics; a curve without an operating lambda is read at this curve's
POINTS = {"PE": ("pe", "PRSS"), "PR alone": ("pr_alone", "PR alone"), "SS alone": ("ss", "PRSS"),
          "PRSS": ("prss", "PRSS"), "SS alone, may drop trigger": ("ss_drop", "PRSS, may drop trigger"),
          "PRSS, may drop trigger": ("prss_drop", "PRSS, may drop trigger")}
TRANSFER, OWN = "main seed's lambda", "own lambda"   # a further seed's rows: '<curve>, <TRANSFER or OWN>'
FLAT = ("lambda", "copy_rate", "copy_rate_ci95", "replication", "replication_ci95", "nn_is_planted",
        "clip_phrasings_memorized", "clip_memorized", "clip_phrasings_heldout", "clip_heldout", "acted_heldout")


@dataclass
class PRSSResult:
    config: dict
    checkpoint: str
    lambdas: list
    tau: float
    M: float
    operating_lambda: dict                 # curve -> lambda chosen on the dev half
    dev_rows: dict                         # curve -> its MethodRows at each lambda on the dev half
    check: dict                            # the cheap check: magnitudes of rewrites keeping / dropping the trigger
    dev_magnitudes: dict
    rows: dict                             # label -> MethodRow (test half)
    curves: dict                           # curve -> [labels], one per lambda
    references: dict                       # committed AMG and baseline curves
    content: MethodRow | None = None       # content-caption reference (memorized test prompts): column (c)'s chance
    seeds: dict = field(default_factory=dict)     # further testbed seed -> memlib.prss.seeds.SeedRun
    steps: dict = field(default_factory=dict)     # label -> per-step mean magnitude (memorized test prompts)
    late: dict = field(default_factory=dict, repr=False)   # label -> per memorized prompt second-half magnitude
    search: dict = field(default_factory=dict)    # curve -> per lambda: how SS chose on flagged memorized prompts
    gap: dict = field(default_factory=dict)       # curve -> per group ||eps_s - eps_p|| / ||eps_p - eps_0|| (PR)
    grid: dict = field(default_factory=dict, repr=False)
    groups: list = field(default_factory=list, repr=False)

    @classmethod
    def from_runs(cls, cfg, checkpoint, prompts, runs, curves, lambdas, operating, dev_rows, tau, M, check,
                  dev_magnitudes, references, data, content=None, seeds=None) -> "PRSSResult":
        mem = np.array([p.memorized for p in prompts])
        res = cls(cfg.to_dict(), checkpoint, list(lambdas), tau, M, operating, dict(dev_rows),
                  {k: v for k, v in check.items() if k != "arrays"}, dev_magnitudes,
                  {label: r.row for label, r in runs.items()}, curves, references, content, dict(seeds or {}),
                  groups=[p.group for p in prompts])
        res.steps["none"] = per_step(runs["none"].text_norm, mem)
        for curve in ("PE", "PR alone", "PRSS"):
            for label in curves.get(curve, []):
                res.steps[label] = per_step(runs[label].text_norm, mem)
                res.late[label] = late_magnitudes(runs[label].text_norm, prompts)
                if "pr_p" in runs[label].info:
                    res.steps[label + ", original prompt"] = per_step(runs[label].info["pr_p"], mem)
        for curve, labels in curves.items():
            if curve.startswith(("SS", "PRSS")):
                res.search[curve] = [_search_stats(runs[lb].info, prompts, lam) for lb, lam in zip(labels, lambdas)]
        for curve, lam in operating.items():
            res.gap[curve] = anchor_gap(runs[curves[curve][lambdas.index(lam)]].info, prompts)
        res.grid = _grid(cfg, prompts, runs, curves, lambdas.index(operating["PRSS"]), data)
        return res

    def curve_rows(self) -> dict[str, list[dict]]:
        out = {c: [dict(self.rows[lb].to_metrics(), curve=c) for lb in labels] for c, labels in self.curves.items()}
        out.update(self.references.get("curves", {}))
        return out

    def operating_label(self, curve: str = "PRSS") -> str:
        return self.curves[curve][self.lambdas.index(self.operating_lambda[curve])]

    def point_label(self, curve: str) -> str:
        """The curve's row at its own operating lambda, else at the operating lambda of ``POINTS[curve][1]``."""
        return self.curves[curve][self.lambdas.index(self.operating_lambda[POINTS[curve][1]])]

    def operating(self, curve: str) -> dict:
        """The curve at its dev-chosen lambda, on the test half: verbatim replication (the dev choice's
        criterion) and the cost in model evaluations."""
        r, none = self.rows[self.operating_label(curve)], self.rows["none"]
        change = (r.clip_content["heldout"] - none.clip_content["heldout"]) / none.clip_content["heldout"]
        return {"lambda": self.operating_lambda[curve], "verbatim_replication": r.replication["verbatim"],
                "verbatim_replication_ci95": list(r.replication_ci["verbatim"]),
                "verbatim_copy_rate": r.copy_rate.get("verbatim"),
                "verbatim_copy_rate_ci95": list(r.copy_rate_ci.get("verbatim", (np.nan, np.nan))),
                "heldout_clip_change": change, "evals_ratio": r.evals_per_image / none.evals_per_image}

    def all_rows(self) -> list[MethodRow]:
        """Every row this run scored (test and dev halves, the reference, the further seeds)."""
        out = [*self.rows.values(), *(r for rows in self.dev_rows.values() for r in rows)]
        out += [self.content] if self.content is not None else []
        return out + [r for s in self.seeds.values() for r in s.all_rows()]

    def timings(self) -> dict:
        """Wall-clock seconds (timings.json): every row's, and each operating point's ratio to CFG."""
        none = self.rows["none"].seconds_per_image
        out = {"rows": [r.timings() for r in self.all_rows()], "seconds_per_image_none": none}
        for curve, (prefix, _) in POINTS.items():
            if curve in self.operating_lambda:
                out[f"{prefix}_seconds_ratio"] = self.rows[self.operating_label(curve)].seconds_per_image / none
        return out

    def points(self) -> dict:
        """Every curve at its point: the three privacy columns and utility, per group, and paired against none."""
        none = self.rows["none"]
        return {c: dict(summary(self.rows[self.point_label(c)]), at=POINTS[c][1],
                        vs_none=vs_none(none, self.rows[self.point_label(c)]))
                for c in self.curves if c in POINTS and POINTS[c][1] in self.operating_lambda}

    def to_metrics(self) -> dict:
        if getattr(self, "_metrics", None) is None:    # paired bootstraps: computed once per result
            self._metrics = self._to_metrics()
        return self._metrics

    def _to_metrics(self) -> dict:
        none_row = self.rows["none"]
        none = none_row.to_metrics()
        lv = self.config["matched_levels"]
        own = {c: [self.rows[lb] for lb in labels] for c, labels in self.curves.items()}
        found = {src: comparisons(own, none_row, lv, prss, ss) for src, (prss, ss) in SOURCES.items() if prss in own}
        refs = self.references.get("curves", {})
        for comp in found.values():
            for key in ("matched_privacy", "matched_utility"):
                mp = comp[key]
                mp["values"].update(reference_values(refs, none, f"{mp['x']}_memorized", f"{mp['y']}_memorized",
                                                     mp["levels"]))
        steps = {lb: rebound_summary(c) for lb, c in self.steps.items()}
        units = none_row.units[np.isin(none_row.groups, MEMORIZED_GROUPS)]
        rebound = {lam: {"pe": steps[pe], "pr": steps[pr], "pr_original_prompt": steps.get(pr + ", original prompt"),
                         "paired_late": rebound_paired(self.late, pe, pr, units) if pe in self.late else None}
                   for lam, pe, pr in zip(self.lambdas, self.curves["PE"], self.curves["PR alone"])}
        points = self.points()
        op = {c: self.operating(c) for c in self.operating_lambda}
        out = {
            "checkpoint": self.checkpoint, "lambdas": self.lambdas, "tau": self.tau, "M": self.M,
            "operating": op, "points": points, "cheap_check": self.check, "dev_magnitudes": self.dev_magnitudes,
            "dev_rows": {c: [r.to_metrics() for r in rows] for c, rows in self.dev_rows.items()},
            "replication_rate_none": none[REP], "clip_score_none": none[CLIP], "clip_heldout_none": none[HELD],
            "copy_rate_none": none.get(COPY), "copy_rate_none_ci95": none.get("copy_rate_ci_memorized"),
            "nn_is_planted_none": none["nn_is_planted_memorized"], "clip_phrasings_none": none.get(PHRASINGS),
            "clip_phrasings_heldout_none": none.get("clip_phrasings_heldout"),
            "evals_per_image_none": none["evals_per_image"], "comparisons": found, "rebound": rebound,
            "search": self.search, "anchor_gap": self.gap,
            "references": {k: v for k, v in self.references.items() if k != "curves"},
            "reference_curves": self.references.get("curves", {}), "curves": self.curves,
            "rows": {label: row.to_metrics() for label, row in self.rows.items()},
            "seeds": {str(s): run.to_metrics() for s, run in self.seeds.items()},
        }
        if self.content is not None:
            out["content_caption"] = self.content.to_metrics()
            out["nn_chance"] = self.content.nn_is_planted.get("memorized")
        for curve, (prefix, _) in POINTS.items():
            if curve in points:
                out.update({f"{prefix}_{k}": points[curve][k] for k in FLAT})
                rel = points[curve]["vs_none"].get("heldout_clip_phrasings_relative", {})
                out[f"{prefix}_heldout_clip_phrasings_change"] = rel.get("estimate")
            if curve in op:
                out.update({f"{prefix}_{k}": v for k, v in op[curve].items()})
        for src, (prss, _) in SOURCES.items():
            if src in found:
                prefix = POINTS[prss][0]
                wins = [judge.holds(pd, "higher") for pd in found[src]["matched_privacy"]["paired"]]
                out[f"{prefix}_vs_pe_wins_matched_privacy"] = sum(w is True for w in wins)
        hd = found["trigger-keeping rewrites"]["half_drop"]
        out["pe_phrasings_drop_at_best"] = hd["pe_drop"]["estimate"]
        out["prss_phrasings_drop_at_pe_best"] = hd.get("prss_drop")
        return out


def _search_stats(info: dict, prompts, lam: float) -> dict:
    """On flagged memorized prompts: the share where SS found a rewrite at most lambda, fell back to a rewrite
    above it, or kept the original (the argmin), per group."""
    chosen, mag, orig = (np.asarray(info[k]) for k in ("ss_chosen", "ss_magnitude", "ss_original_magnitude"))
    out = {}
    for g in MEMORIZED_GROUPS + ("heldout",):
        sel = np.array([p.group == g for p in prompts]) & (orig > lam)
        n = int(sel.sum())
        out[g] = {"flagged": n / max(sum(p.group == g for p in prompts), 1),
                  "found": float(((chosen > 0) & (mag <= lam))[sel].mean()) if n else float("nan"),
                  "fallback": float(((chosen > 0) & (mag > lam))[sel].mean()) if n else float("nan"),
                  "kept_original": float((chosen == 0)[sel].mean()) if n else float("nan")}
    return out


def _grid(cfg, prompts, runs, curves, k: int, data) -> dict:
    """A few memorized test prompts of each group at the operating lambda: the SS rewrite and its magnitude, the
    images without mitigation, under SS, PRSS and PE, and the planted image."""
    from .paraphrase import candidate_source

    per = max(1, -(-cfg.grid_prompts // len(MEMORIZED_GROUPS)))
    idx = [i for g in MEMORIZED_GROUPS for i in [j for j, p in enumerate(prompts) if p.group == g][:per]]
    idx = idx[:cfg.grid_prompts]
    ss = runs[curves["SS alone"][k]].info
    source = candidate_source(cfg.source)
    rewrites = [([prompts[i].text] + source(prompts[i].text))[int(ss["ss_chosen"][i])] for i in idx]
    labels = {"none": "none", "SS alone": curves["SS alone"][k], "PRSS": curves["PRSS"][k], "PE": curves["PE"][k]}
    if "PRSS, may drop trigger" in curves:
        labels["PRSS, may drop trigger"] = curves["PRSS, may drop trigger"][k]
    planted = [int(np.flatnonzero(data.cluster == prompts[i].cluster)[0]) for i in idx]
    return {"captions": [prompts[i].text for i in idx], "groups": [prompts[i].group for i in idx],
            "rewrites": rewrites, "magnitude": [float(ss["ss_original_magnitude"][i]) for i in idx],
            "rewrite_magnitude": [float(ss["ss_magnitude"][i]) for i in idx],
            "rows": {name: runs[label].images[idx, 0] for name, label in labels.items()},
            "planted": (data.images[planted] + 1) / 2}
