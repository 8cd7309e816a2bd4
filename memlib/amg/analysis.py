"""Notebook 04's analyses beside its tables (Chen, Liu, Xu, CVPR 2024): Main's and Strong's c3 from the dev
sweep, which y_N each rule picks, and notebook 03's methods at AMG Main's utility (read from notebook 03's
committed metrics: same harness, prompts and seeds)."""
from __future__ import annotations

import numpy as np

from ..mitigate.columns import MethodRow
from .guidance import AMGSettings, neighbour_caption


def memorized_replication(row: MethodRow) -> float:
    """Pooled replication over the memorized groups."""
    return row.replication.get("memorized", float("nan"))


def choose_c3(dev_rows: dict[str, list[MethodRow]], sweep: list[float], bar: float) -> tuple[str, float, float]:
    """(schedule, Main c3, Strong c3) from the dev sweep: per schedule the smallest c3 whose pooled memorized
    replication is <= ``bar``; across schedules the one keeping more content CLIP there. If none reaches the bar,
    the lowest replication (then the higher CLIP). Strong is the next value of the same schedule's sweep."""
    cands = []
    for sched, rows in dev_rows.items():
        ok = [r for r in rows if memorized_replication(r) <= bar]
        if ok:
            r = min(ok, key=lambda r: r.value)
            cands.append((0, -r.clip_content["memorized"], sched, r.value))
    if not cands:
        cands = [(memorized_replication(r), -r.clip_content["memorized"], s, r.value)
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
    """Notebook 03's methods beside AMG Main, each curve (its knob values plus no mitigation) linearly
    interpolated, from notebook 03's committed metrics when both notebooks used the same prompts, seeds and
    generation settings. Per method: replication and NCC at AMG Main's content CLIP on memorized prompts (matched
    utility) and content CLIP at AMG Main's replication (matched privacy), each None where the curve does not
    reach that level, with the curve's range; and the curve's point nearest AMG Main in content CLIP."""
    from ..mitigate.reference_runs import committed_metrics

    m, out = committed_metrics("03_mitigation", cfg, path)
    out["available"] = m is not None
    if m is None:
        return out
    rows = m["rows"]
    none = [r for r in rows if r["method"] == "none"]
    amg = result.rows["AMG Main"]
    x, rep = amg.clip_content["memorized"], memorized_replication(amg)
    out.update(clip_level=x, replication_level=rep,
               amg={"replication": rep, "similarity": amg.similarity_mean["memorized"], "clip_content": x},
               methods={})
    for name in sorted({r["method"] for r in rows} - {"none"}):
        fam = [r for r in rows if r["method"] == name] + none
        entry = {}
        for y, key in (("replication", "replication_memorized"), ("similarity", "similarity_mean_memorized")):
            xs, ys = _curve(fam, "clip_content_memorized", key)
            entry[y] = _at(x, xs, ys)
        entry["clip_range"] = [float(xs.min()), float(xs.max())]
        xs, ys = _curve(fam, "replication_memorized", "clip_content_memorized")
        entry["clip_at_amg_replication"] = _at(rep, xs, ys)
        entry["replication_range"] = [float(xs.min()), float(xs.max())]
        near = min((r for r in fam if r["method"] == name), key=lambda r: abs(r["clip_content_memorized"] - x))
        entry["nearest"] = {"knob": near.get("knob", ""), "value": near["value"],
                            "clip_content": near["clip_content_memorized"],
                            "replication": near["replication_memorized"],
                            "similarity": near["similarity_mean_memorized"]}
        out["methods"][name] = entry
    return out
