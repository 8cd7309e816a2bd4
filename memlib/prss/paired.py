"""Notebook 05's comparisons with paired intervals (PRSS, Chen et al., CVPR 2025, compares methods along
privacy-utility curves traced by lambda).

Every comparison is b minus a over the same test prompts and initial noises, with a percentile interval that
resamples planted images (``memlib.mitigate.columns.paired``, ``memlib.paired_bootstrap``). A curve is its rows
plus no mitigation, sorted by the mean of the matching column and joined linearly. At a matched level between
two x-adjacent points with weight t, the curve's mean of any column is (1 - t) times one row's mean plus t times
the other's; each prompt's value is interpolated with the same weight, so the interpolated curves of two methods
are compared prompt by prompt (the weight is taken as fixed: the interval does not carry the uncertainty of
where the curves reach the level). These functions need the rows' per-prompt values, so they run where the rows
were scored; the metrics keep what they return (``to_dict``), and ``memlib.prss.report`` judges from that.
"""
from __future__ import annotations

import numpy as np

from ..mitigate.columns import MethodRow, paired
from ..mitigate.evalset import MEMORIZED_GROUPS
from ..paired_bootstrap import paired_difference

# a row attribute (per group) -> its per-prompt column (MethodRow.per_prompt)
PER_PROMPT = {"copy_rate": "copy", "replication": "replication", "nn_is_planted": "nn_planted",
              "clip_phrasings": "clip_phrasings", "clip_content": "clip_content"}
PRIVACY, UTILITY, SECOND_UTILITY = "copy_rate", "clip_phrasings", "clip_content"


def mean_of(row: MethodRow, column: str, group: str = "memorized") -> float:
    return float(getattr(row, column).get(group, np.nan))


def _memorized(row: MethodRow) -> np.ndarray:
    return np.isin(row.groups, MEMORIZED_GROUPS)


def sorted_curve(rows: list[MethodRow], none: MethodRow, x: str) -> list[MethodRow]:
    """No mitigation and the curve's rows, by their mean ``x`` (memorized prompts; ties keep the given order)."""
    pts = [none] + list(rows)
    return [pts[i] for i in np.argsort([mean_of(r, x) for r in pts], kind="stable")]


def weights_at(curve: list[MethodRow], x: str, level: float) -> tuple[int, int, float] | None:
    """(i, j, t): ``level`` lies between the sorted curve's points i and j = i + 1 at weight t; None outside."""
    xs = [mean_of(r, x) for r in curve]
    if not xs[0] <= level <= xs[-1]:
        return None
    for i in range(len(xs) - 1):
        if xs[i] <= level <= xs[i + 1]:
            gap = xs[i + 1] - xs[i]
            return i, i + 1, (level - xs[i]) / gap if gap > 0 else 1.0
    return len(xs) - 1, len(xs) - 1, 0.0    # a single point


def at_level(curve: list[MethodRow], x: str, y: str, level: float) -> np.ndarray | None:
    """Each memorized prompt's ``y`` on the curve where its mean ``x`` is ``level`` (None: outside the curve)."""
    w = weights_at(curve, x, level)
    if w is None:
        return None
    i, j, t = w
    a, b = curve[i], curve[j]
    col = PER_PROMPT[y]
    return (1 - t) * a.per_prompt[col][_memorized(a)] + t * b.per_prompt[col][_memorized(b)]


def _units(row: MethodRow) -> np.ndarray:
    return row.units[_memorized(row)]


def _check_same(a: MethodRow, b: MethodRow) -> None:
    if a.units is None or b.units is None or a.units.shape != b.units.shape or (a.units != b.units).any():
        raise ValueError(f"rows {a.method} and {b.method} were not scored on the same prompts in this process; a "
                         f"paired comparison needs the same prompts and noises")


def compare(a: MethodRow, b: MethodRow, column: str, group: str = "memorized", relative: bool = False) -> dict:
    """b's ``column`` (a ``PER_PROMPT`` key) minus a's, paired over the same prompts and noises."""
    return paired(a, b, PER_PROMPT[column], group=group, relative=relative).to_dict()


def vs_none(none: MethodRow, row: MethodRow) -> dict:
    """The row against no mitigation: the three privacy columns and both utility columns (memorized), held-out
    every-phrasing CLIP (relative change), and per memorized group the two replication criteria."""
    out = {c: compare(none, row, c) for c in PER_PROMPT}
    if "heldout" in set(row.groups):
        out["heldout_clip_phrasings_relative"] = compare(none, row, "clip_phrasings", "heldout", relative=True)
    out["groups"] = {g: {c: compare(none, row, c, g) for c in ("copy_rate", "replication")}
                     for g in MEMORIZED_GROUPS if g in set(row.groups)}
    return out


def summary(row: MethodRow) -> dict:
    """A row's privacy columns and utility, with intervals, overall and per memorized group."""
    out = {"lambda": row.value, "copy_rate": mean_of(row, "copy_rate"),
           "copy_rate_ci95": list(row.copy_rate_ci.get("memorized", (np.nan, np.nan))),
           "replication": mean_of(row, "replication"),
           "replication_ci95": list(row.replication_ci.get("memorized", (np.nan, np.nan))),
           "nn_is_planted": mean_of(row, "nn_is_planted"),
           "clip_phrasings_memorized": mean_of(row, "clip_phrasings"),
           "clip_phrasings_memorized_ci95": list(row.clip_phrasings_ci.get("memorized", (np.nan, np.nan))),
           "clip_memorized": mean_of(row, "clip_content"),
           "clip_phrasings_heldout": mean_of(row, "clip_phrasings", "heldout"),
           "clip_heldout": mean_of(row, "clip_content", "heldout"), "acted_heldout": row.acted_heldout}
    out["groups"] = {g: {"copy_rate": row.copy_rate[g], "copy_rate_ci95": list(row.copy_rate_ci.get(g, (np.nan,) * 2)),
                         "replication": row.replication[g], "replication_ci95": list(row.replication_ci[g]),
                         "nn_is_planted": row.nn_is_planted[g]}
                     for g in MEMORIZED_GROUPS if g in row.replication}
    return out


def _levels(a: list[MethodRow], b: list[MethodRow], x: str, n: int) -> list[float]:
    lo = max(mean_of(a[0], x), mean_of(b[0], x))
    hi = min(mean_of(a[-1], x), mean_of(b[-1], x))
    return np.linspace(lo, hi, n + 2)[1:-1].tolist() if hi > lo else []


def matched(curves: dict[str, list[MethodRow]], none: MethodRow, a: str, b: str, levels: int, x: str, y: str,
            also: str | None = None) -> dict:
    """Curve ``b`` against ``a`` at ``levels`` values of ``x`` inside both ranges: every own curve's mean ``y``
    (and ``also``) there, and b's ``y`` minus a's there, paired prompt by prompt."""
    own = {name: sorted_curve(rows, none, x) for name, rows in curves.items()}
    lv = _levels(own[a], own[b], x, levels)
    out = {"x": x, "y": y, "a": a, "b": b, "n_levels": levels, "levels": lv, "values": {}, "paired": []}
    if not lv:
        out["note"] = f"{a} and {b} do not overlap in {x}"
        return out
    for key, col in (("values", y), ("also", also)):
        if col:
            out[key] = {name: [None if (v := at_level(pts, x, col, level)) is None else float(v.mean())
                               for level in lv] for name, pts in own.items()}
    units = _units(none)
    for level in lv:
        va, vb = at_level(own[a], x, y, level), at_level(own[b], x, y, level)
        out["paired"].append(paired_difference(va, vb, units).to_dict())
    return out


def half_drop(curves: dict[str, list[MethodRow]], none: MethodRow, prss: str, x: str = PRIVACY,
              y: str = UTILITY) -> dict:
    """At PE's most private point (lowest mean ``x``; ties: the higher ``y``): PE's ``y`` drop from no
    mitigation, and PRSS's ``y`` at that ``x`` minus the midpoint of none and PE there (positive: PRSS loses
    less than half of PE's drop), paired. Where PRSS never gets that private: its most private point's ``x``
    minus PE's, paired."""
    pe = min(curves["PE"], key=lambda r: (mean_of(r, x), -mean_of(r, y)))
    units = _units(none)
    mine = sorted_curve(curves[prss], none, x)
    out = {"pe_best_lambda": pe.value, "pe_best_x": mean_of(pe, x), "x": x, "y": y,
           "pe_drop": compare(pe, none, y), "prss_y": None, "test": None, "reach": None}
    v = at_level(mine, x, y, mean_of(pe, x))
    if v is None:
        out["reach"] = compare(pe, mine[0], x)
        return out
    mid = 0.5 * (none.per_prompt[PER_PROMPT[y]][_memorized(none)] + pe.per_prompt[PER_PROMPT[y]][_memorized(pe)])
    out["prss_y"] = float(v.mean())
    out["prss_drop"] = mean_of(none, y) - float(v.mean())
    out["test"] = paired_difference(mid, v, units).to_dict()
    return out


def per_lambda(curves: dict[str, list[MethodRow]], subject: str, others: list[str], column: str) -> dict:
    """At each lambda (rows in the curves' order), ``subject``'s ``column`` minus each other curve's, paired."""
    out = {"lambdas": [r.value for r in curves[subject]], "column": column, "subject": subject,
           "vs": {o: [] for o in others}}
    for k, row in enumerate(curves[subject]):
        for o in others:
            _check_same(curves[o][k], row)
            out["vs"][o].append(compare(curves[o][k], row, column))
    return out


def comparisons(curves: dict[str, list[MethodRow]], none: MethodRow, levels: int, prss: str, ss: str) -> dict:
    """The paper's comparisons for one candidate source: PRSS against PE at matched privacy (independent copy
    rate) and matched utility (every-phrasing CLIP), PRSS's drop at PE's most private point, PR alone's privacy
    and SS alone's utility at each lambda against the others."""
    use = {n: curves[n] for n in ("PE", "PR alone", ss, prss)}
    return {"matched_privacy": matched(use, none, "PE", prss, levels, PRIVACY, UTILITY, also=SECOND_UTILITY),
            "matched_utility": matched(use, none, "PE", prss, levels, UTILITY, PRIVACY),
            "half_drop": half_drop(use, none, prss),
            "pr_most_privacy": per_lambda(use, "PR alone", ["PE", ss], PRIVACY),
            "ss_best_utility": per_lambda(use, ss, ["PE", "PR alone", prss], UTILITY)}


def late_magnitudes(text_norm: np.ndarray, prompts) -> np.ndarray:
    """Each memorized prompt's mean magnitude over the second half of the steps (over its generations)."""
    mem = np.array([p.memorized for p in prompts])
    steps = text_norm.shape[-1]
    return np.nanmean(text_norm[mem][..., steps // 2:].reshape(int(mem.sum()), -1), axis=1)


def rebound_paired(late: dict[str, np.ndarray], pe: str, pr: str, units: np.ndarray) -> dict:
    """PR alone's second-half magnitude minus PE's on memorized prompts, paired."""
    return paired_difference(late[pe], late[pr], units).to_dict()
