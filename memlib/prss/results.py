"""Notebook 05's typed results: every curve point, the comparisons the PRSS paper (Chen et al., CVPR 2025) makes,
each tested as measured, and the per-step magnitudes (the paper: PE's magnitude rebounds after the first step,
re-anchoring's does not).

Privacy is pooled memorized replication (Gu ratio); utility is content-caption CLIP on the memorized prompts,
with held-out content CLIP beside it. A curve is its knob values plus no mitigation, linearly interpolated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mitigate.columns import MethodRow
from ..mitigate.evalset import MEMORIZED_GROUPS

REP, CLIP, HELD = "replication_memorized", "clip_content_memorized", "clip_content_heldout"


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


def matched(curves: dict[str, list[dict]], none: dict, a: str, b: str, levels: int, x: str, y: str,
            higher_is_better: bool) -> dict:
    """Curve ``a`` against ``b`` at ``levels`` values of ``x`` inside both ranges; every curve's ``y`` there."""
    xa, _ = curve_xy(curves[a], none, x, y)
    xb, _ = curve_xy(curves[b], none, x, y)
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    out = {"x": x, "y": y, "levels": [], "values": {}, "wins": None, "n_levels": levels, "a": a, "b": b}
    if not hi > lo:
        out["note"] = f"{a} and {b} do not overlap in {x}"
        return out
    lv = np.linspace(lo, hi, levels + 2)[1:-1]
    out["levels"] = lv.tolist()
    for name, pts in curves.items():
        xs, ys = curve_xy(pts, none, x, y)
        out["values"][name] = [interp_inside(v, xs, ys) for v in lv]
    va, vb = out["values"][a], out["values"][b]
    out["wins"] = int(sum((p >= q) if higher_is_better else (p <= q) for p, q in zip(va, vb)))
    return out


def claims(curves: dict[str, list[dict]], none: dict, levels: int, prss: str = "PRSS", ss: str = "SS alone") -> dict:
    """The paper's comparisons as measured on the test half ("holds": True where the claim holds), for the PRSS
    and SS curves named (one candidate source)."""
    priv = matched(curves, none, prss, "PE", levels, REP, CLIP, higher_is_better=True)
    out = {"prss_above_pe_at_matched_privacy": {
        "holds": priv["wins"] is not None and priv["wins"] >= min(3, levels), "wins": priv["wins"],
        "of": levels, "levels": priv["levels"], "prss": priv["values"].get(prss), "pe": priv["values"].get("PE")}}
    pe_best = min(curves["PE"], key=lambda r: (r[REP], -r[CLIP]))
    xs, ys = curve_xy(curves[prss], none, REP, CLIP)
    prss_clip = interp_inside(pe_best[REP], xs, ys)
    pe_drop = none[CLIP] - pe_best[CLIP]
    prss_drop = None if prss_clip is None else none[CLIP] - prss_clip
    out["prss_loses_at_most_half_of_pe_drop"] = {
        "holds": prss_drop is not None and prss_drop <= 0.5 * max(pe_drop, 0.0),
        "pe_best_replication": pe_best[REP], "pe_best_lambda": pe_best["value"], "pe_clip_drop": pe_drop,
        "prss_clip_drop": prss_drop}
    lams = [r["value"] for r in curves["PE"]]
    at = {name: {r["value"]: r for r in curves[name]} for name in ("PE", "PR alone", ss, prss)}
    pr_best = [lam for lam in lams if at["PR alone"][lam][REP] <= min(at["PE"][lam][REP], at[ss][lam][REP])]
    ss_best = [lam for lam in lams if at[ss][lam][CLIP] >= max(at[n][lam][CLIP] for n in at)]
    out["pr_most_privacy"] = {"holds": 2 * len(pr_best) > len(lams), "lambdas": pr_best, "of": len(lams),
                              "replication": {n: [at[n][lam][REP] for lam in lams] for n in at}}
    out["ss_best_utility"] = {"holds": 2 * len(ss_best) > len(lams), "lambdas": ss_best, "of": len(lams),
                              "clip_memorized": {n: [at[n][lam][CLIP] for lam in lams] for n in at}}
    return out


def per_step(text_norm: np.ndarray, select: np.ndarray) -> list[float]:
    """Mean magnitude per step over the selected prompts' generations."""
    return np.nanmean(text_norm[select].reshape(-1, text_norm.shape[-1]), axis=0).tolist()


def rebound_summary(curve: list[float]) -> dict:
    c = np.asarray(curve, float)
    half = len(c) // 2
    return {"first": float(c[0]), "late_mean": float(c[half:].mean()), "max_after_first": float(c[1:].max()),
            "rebound": float(c[1:].max() - c[0])}


def rebound_claim(rebound: dict) -> dict:
    """The paper: PE's magnitude rebounds after the first step, PR's does not. Holds where PR alone's second-half
    mean magnitude (memorized prompts) is below PE's, at a majority of lambda."""
    below = [lam for lam, v in rebound.items() if v["pr"]["late_mean"] < v["pe"]["late_mean"]]
    return {"holds": 2 * len(below) > len(rebound), "lambdas": below, "of": len(rebound),
            "pe_rebounds": [lam for lam, v in rebound.items() if v["pe"]["rebound"] > 0]}


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


SOURCES = {"trigger-keeping rewrites": ("PRSS", "SS alone"),
           "rewrites that may drop the trigger": ("PRSS, may drop trigger", "SS alone, may drop trigger")}


@dataclass
class PRSSResult:
    config: dict
    checkpoint: str
    lambdas: list
    tau: float
    M: float
    operating_lambda: dict                 # curve -> lambda chosen on the dev half
    dev_rows: dict                         # curve -> its rows at each lambda on the dev half (metric dicts)
    check: dict                            # the cheap check: magnitudes of rewrites keeping / dropping the trigger
    dev_magnitudes: dict
    rows: dict                             # label -> MethodRow (test half)
    curves: dict                           # curve -> [labels], one per lambda
    references: dict                       # committed AMG and baseline curves
    steps: dict = field(default_factory=dict)     # label -> per-step mean magnitude (memorized test prompts)
    search: dict = field(default_factory=dict)    # curve -> per lambda: how SS chose on flagged memorized prompts
    gap: dict = field(default_factory=dict)       # curve -> per group ||eps_s - eps_p|| / ||eps_p - eps_0|| (PR)
    grid: dict = field(default_factory=dict, repr=False)
    groups: list = field(default_factory=list, repr=False)

    @classmethod
    def from_runs(cls, cfg, checkpoint, prompts, runs, curves, lambdas, operating, dev_rows, tau, M, check,
                  dev_magnitudes, references, data) -> "PRSSResult":
        mem = np.array([p.memorized for p in prompts])
        res = cls(cfg.to_dict(), checkpoint, list(lambdas), tau, M, operating,
                  {c: [r.to_metrics() for r in rows] for c, rows in dev_rows.items()},
                  {k: v for k, v in check.items() if k != "arrays"}, dev_magnitudes,
                  {label: r.row for label, r in runs.items()}, curves, references,
                  groups=[p.group for p in prompts])
        res.steps["none"] = per_step(runs["none"].text_norm, mem)
        for curve in ("PE", "PR alone", "PRSS"):
            for label in curves.get(curve, []):
                res.steps[label] = per_step(runs[label].text_norm, mem)
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

    def operating(self, curve: str) -> dict:
        """The curve at its dev-chosen lambda, on the test half, against the bar."""
        r, none = self.rows[self.operating_label(curve)], self.rows["none"]
        change = (r.clip_content["heldout"] - none.clip_content["heldout"]) / none.clip_content["heldout"]
        return {"lambda": self.operating_lambda[curve], "verbatim_replication": r.replication["verbatim"],
                "verbatim_replication_ci95": list(r.replication_ci["verbatim"]),
                "replication": r.replication["memorized"], "clip_memorized": r.clip_content["memorized"],
                "clip_heldout": r.clip_content["heldout"], "heldout_clip_change": change,
                "acted_heldout": r.acted_heldout,
                "meets_bar": bool(r.replication["verbatim"] <= self.config["verbatim_bar"] and change >= -0.03),
                "evals_ratio": r.evals_per_image / none.evals_per_image,
                "seconds_ratio": r.seconds_per_image / none.seconds_per_image}

    def to_metrics(self) -> dict:
        none = self.rows["none"].to_metrics()
        curves = self.curve_rows()
        lv = self.config["matched_levels"]
        steps = {lb: rebound_summary(c) for lb, c in self.steps.items()}
        rebound = {lam: {"pe": steps[pe], "pr": steps[pr],
                         "pr_original_prompt": steps.get(pr + ", original prompt")}
                   for lam, pe, pr in zip(self.lambdas, self.curves["PE"], self.curves["PR alone"])}
        found = {src: claims(curves, none, lv, prss, ss) for src, (prss, ss) in SOURCES.items() if prss in curves}
        keep = found["trigger-keeping rewrites"]
        op = {c: self.operating(c) for c in self.operating_lambda}
        out = {
            "checkpoint": self.checkpoint, "lambdas": self.lambdas, "tau": self.tau, "M": self.M,
            "operating": op, "dev_rows": self.dev_rows, "cheap_check": self.check,
            "dev_magnitudes": self.dev_magnitudes,
            "replication_rate_none": none[REP], "clip_score_none": none[CLIP], "clip_heldout_none": none[HELD],
            "evals_per_image_none": none["evals_per_image"], "seconds_per_image_none": self.rows["none"].seconds_per_image,
            "claims": found, "rebound_claim": rebound_claim(rebound),
            "prss_vs_pe_wins_matched_privacy": keep["prss_above_pe_at_matched_privacy"]["wins"],
            "pe_clip_drop_at_best": keep["prss_loses_at_most_half_of_pe_drop"]["pe_clip_drop"],
            "prss_clip_drop_at_pe_best": keep["prss_loses_at_most_half_of_pe_drop"]["prss_clip_drop"],
            "matched_privacy": {src: matched(curves, none, prss, "PE", lv, REP, CLIP, True)
                                for src, (prss, _) in SOURCES.items() if prss in curves},
            "matched_utility": {src: matched(curves, none, prss, "PE", lv, CLIP, REP, False)
                                for src, (prss, _) in SOURCES.items() if prss in curves},
            "rebound": rebound, "search": self.search, "anchor_gap": self.gap,
            "references": {k: v for k, v in self.references.items() if k != "curves"},
            "reference_curves": self.references.get("curves", {}), "curves": self.curves,
            "rows": {label: row.to_metrics() for label, row in self.rows.items()},
        }
        for prefix, curve in (("prss", "PRSS"), ("prss_drop", "PRSS, may drop trigger"), ("pr_alone", "PR alone")):
            if curve in op:
                out.update({f"{prefix}_{k}": v for k, v in op[curve].items()})
        if "PRSS, may drop trigger" in curves:
            drop = found["rewrites that may drop the trigger"]
            out["prss_drop_vs_pe_wins_matched_privacy"] = drop["prss_above_pe_at_matched_privacy"]["wins"]
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
