"""Notebook 04's analyses beside its tables (Chen, Liu, Xu, CVPR 2024): Main's and Strong's c3 from the dev
sweep, which y_N each rule picks, and notebook 03's methods at AMG Main's utility (read from notebook 03's
committed metrics: same harness, prompts and seeds)."""
from __future__ import annotations

import numpy as np

from ..mitigate.columns import MethodRow
from ..mitigate.evalset import MEMORIZED_GROUPS
from .guidance import AMGSettings, neighbour_caption


def memorized_replication(row: MethodRow) -> float:
    """Pooled replication over the memorized groups."""
    return row.replication.get("memorized", float("nan"))


def memorized_privacy(row: MethodRow, column: str = "replication") -> float:
    """Pooled over the memorized groups: pixel Gu replication ('replication') or the copy detector's rate ('copy')."""
    if column not in ("replication", "copy"):
        raise ValueError(f"privacy column {column!r}: choose 'replication' or 'copy'")
    return memorized_replication(row) if column == "replication" else row.copy_rate.get("memorized", float("nan"))


def fired_share(fired: np.ndarray, groups, group: str = "heldout") -> float:
    """Share of the group's generations where AMG's switch fired at some step (``fired``: (P, G, S))."""
    hit = np.nan_to_num(fired).any(-1)
    sel = np.isin(groups, MEMORIZED_GROUPS) if group == "memorized" else np.asarray(groups) == group
    return float(hit[sel].mean())


def choose_c3(dev_rows: dict[str, list[MethodRow]], sweep: list[float], bar: float,
              column: str = "replication") -> tuple[str, float, float]:
    """(schedule, Main c3, Strong c3) from the dev sweep: per schedule the smallest c3 whose pooled memorized
    privacy ``column`` (``memorized_privacy``) is <= ``bar``; across schedules the one keeping more content CLIP
    there. If none reaches the bar, the lowest value (then the higher CLIP). Strong is the next value of the same
    schedule's sweep."""
    cands = []
    for sched, rows in dev_rows.items():
        ok = [r for r in rows if memorized_privacy(r, column) <= bar]
        if ok:
            r = min(ok, key=lambda r: r.value)
            cands.append((0, -r.clip_content["memorized"], sched, r.value))
    if not cands:
        cands = [(memorized_privacy(r, column), -r.clip_content["memorized"], s, r.value)
                 for s, rows in dev_rows.items() for r in rows]
    _, _, sched, c3 = min(cands)
    i = sweep.index(c3)
    return sched, c3, sweep[min(i + 1, len(sweep) - 1)]


def y_n_rules(data, index, prompts, images, settings: AMGSettings | None = None) -> dict:
    """Which negative caption y_N each rule picks for each memorized prompt's plain-CFG generation, per group:
    n0's caption (paper) is the prompt itself, another caption of the planted image, or elsewhere; the top-k rule
    (code) gives the bare trigger, another caption, or nothing frequent enough."""
    settings = settings or AMGSettings()
    out: dict = {}
    for p, x in zip(prompts, images):
        nn = int(index.topk_ncc(x[None], 1)[1][0, 0])
        cap_nn = neighbour_caption(index, data.captions, x, nn, AMGSettings(caption="nn"))
        cap_top = neighbour_caption(index, data.captions, x, nn, AMGSettings(caption="topk", topk=settings.topk,
                                                                               min_count=settings.min_count))
        trigger = set(p.text.split()) - set(p.content.split())
        planted = set(np.flatnonzero(data.cluster == p.cluster).tolist())
        caps_planted = {data.captions[r] for r in planted}
        g = out.setdefault(p.group, {"n": 0, "nn_is_prompt": 0, "nn_other_planted_caption": 0,
                                     "topk_is_bare_trigger": 0, "topk_planted_caption": 0, "topk_none": 0,
                                     "examples": []})
        g["n"] += 1
        g["nn_is_prompt"] += cap_nn == p.text
        g["nn_other_planted_caption"] += cap_nn != p.text and cap_nn in caps_planted
        g["topk_is_bare_trigger"] += cap_top is not None and set(cap_top.split()) == trigger and bool(trigger)
        g["topk_planted_caption"] += cap_top is not None and cap_top in caps_planted
        g["topk_none"] += cap_top is None
        if len(g["examples"]) < 2:
            g["examples"].append({"prompt": p.text, "nn": cap_nn, "topk": cap_top})
    for g in out.values():
        for k in list(g):
            if k not in ("n", "examples"):
                g[k] = g[k] / g["n"]
    return out


def _curve(rows: list[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The curve's (x, y) points sorted by x; where points share an x, the highest y (the curve's upper
    envelope there, so the interpolation has one value per x)."""
    best: dict = {}
    for r in rows:
        best[r[x]] = max(best.get(r[x], -np.inf), r[y])
    xs = sorted(best)
    return np.array(xs, float), np.array([best[v] for v in xs], float)


def _at(level: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    return float(np.interp(level, xs, ys)) if xs.min() <= level <= xs.max() else None


def matched_to_notebook_03(result, cfg, path=None) -> dict:
    """Notebook 03's methods (Wen's PE among them) beside AMG Main, each curve (its knob values plus no mitigation)
    linearly interpolated, from notebook 03's committed metrics when both notebooks used the same prompts, seeds
    and generation settings. Utility is every-phrasing CLIP on memorized prompts where notebook 03 measured it
    (``utility``), else content CLIP. Per method: replication, copy rate and NCC at AMG Main's utility (matched
    utility) and utility at AMG Main's replication and at its copy rate (matched privacy), each None where the
    curve does not reach that level or notebook 03 did not measure the column, with the curve's range; and the
    curve's point nearest AMG Main in utility. No interval: the two notebooks' per-prompt values are not stored
    (the paired comparison with Wen's PE is the row notebook 04 runs itself)."""
    from ..mitigate.reference_runs import committed_metrics

    m, out = committed_metrics("03_mitigation", cfg, path)
    out["available"] = m is not None
    if m is None:
        return out
    rows = m["rows"]
    none = [r for r in rows if r["method"] == "none"]
    amg = result.rows["AMG Main"]
    has = lambda key: all(key in r for r in rows)
    utility = "clip_phrasings" if has("clip_phrasings_memorized") and amg.clip_phrasings else "clip_content"
    ukey = f"{utility}_memorized"
    x, rep = getattr(amg, utility)["memorized"], memorized_replication(amg)
    copy = amg.copy_rate.get("memorized", float("nan"))
    out.update(utility=utility, clip_level=x, replication_level=rep, copy_rate_level=copy,
               amg={"replication": rep, "copy_rate": copy, "similarity": amg.similarity_mean["memorized"],
                    "clip_content": x}, methods={})
    privacy = [(y, key) for y, key in (("replication", "replication_memorized"), ("copy_rate", "copy_rate_memorized"),
                                       ("similarity", "similarity_mean_memorized")) if has(key)]
    for name in sorted({r["method"] for r in rows} - {"none"}):
        fam = [r for r in rows if r["method"] == name] + none
        entry = {"copy_rate": None}
        for y, key in privacy:
            xs, ys = _curve(fam, ukey, key)
            entry[y] = _at(x, xs, ys)
        entry["clip_range"] = [float(xs.min()), float(xs.max())]
        for y, key, level in (("replication", "replication_memorized", rep),
                              ("copy_rate", "copy_rate_memorized", copy)):
            if has(key):
                xs, ys = _curve(fam, key, ukey)
                entry[f"clip_at_amg_{y}"] = _at(level, xs, ys) if np.isfinite(level) else None
                entry[f"{y}_range"] = [float(xs.min()), float(xs.max())]
        near = min((r for r in fam if r["method"] == name), key=lambda r: abs(r[ukey] - x))
        entry["nearest"] = {"knob": near.get("knob", ""), "value": near["value"], "clip_content": near[ukey],
                            "replication": near["replication_memorized"],
                            "copy_rate": near.get("copy_rate_memorized"),
                            "similarity": near["similarity_mean_memorized"]}
        out["methods"][name] = entry
    return out
