"""Notebook 05's results tables as Markdown (PRSS, Chen et al., CVPR 2025), from the metrics dict alone. A value
the metrics do not hold (a run made before a column existed) shows as n/a."""
from __future__ import annotations

import math

from ..mitigate.columns import PRIVACY_HEADER, privacy_cells
from ..mitigate.evalset import MEMORIZED_GROUPS
from .judge import direction

NAN = float("nan")
READING = {"PRSS": "the faithful reading", "PRSS, may drop trigger": "removes the memorized key (upper bound)"}


def num(v, fmt: str = ".3f") -> str:
    """A number, '—' for None (outside a curve), 'n/a' for a value not measured."""
    if v is None:
        return "—"
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "n/a"
    return format(v, fmt)


def ci(v, c, fmt: str = ".3f") -> str:
    shown = num(v, fmt)
    if isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(x, (int, float)) for x in c):
        shown += f" [{num(c[0], fmt)}, {num(c[1], fmt)}]"
    return shown


def change(pd: dict | None, fmt: str = "+.3f") -> str:
    """A paired difference with its interval and direction ('lower', 'higher', 'not distinguishable')."""
    if not pd:
        return "n/a"
    fmt = "+.1%" if pd.get("relative") else fmt
    return f"{ci(pd.get('estimate'), pd.get('ci95'), fmt)} ({direction(pd) or 'n/a'})"


def privacy(r: dict, chance=None) -> str:
    return privacy_cells(r, chance if isinstance(chance, (int, float)) else None).replace("nan", "n/a")


def _util(r: dict) -> str:
    return (f"{ci(r.get('clip_phrasings_memorized', NAN), r.get('clip_phrasings_ci_memorized'))} | "
            f"{num(r.get('clip_content_memorized', NAN))} | {num(r.get('clip_phrasings_heldout', NAN))} | "
            f"{num(r.get('clip_content_heldout', NAN))}")


def testbed_table(m: dict) -> str:
    """Every curve point on the test half, no mitigation and the content-caption reference first."""
    chance = m.get("nn_chance")
    out = [f"| PRSS on the testbed (test half) | {PRIVACY_HEADER} | pixel: verbatim / image dup / caption dup | "
           "every-phrasing CLIP [95 % CI] | content CLIP | held-out every-phrasing CLIP | held-out content CLIP | "
           "held-out acted on | evaluations per image |", "|---" * 11 + "|"]

    def line(label, r):
        groups = " / ".join(num(r.get(f"replication_{g}", NAN), ".2f") for g in MEMORIZED_GROUPS)
        return (f"| {label} | {privacy(r, chance)} | {groups} | {_util(r)} | {num(r.get('acted_heldout', NAN), '.2f')} "
                f"| {num(r.get('evals_per_image', NAN), '.0f')} |")

    out.append(line("none", m["rows"]["none"]))
    if "content_caption" in m:
        out.append(line("content caption alone (reference)", m["content_caption"]))
    for labels in m["curves"].values():
        out += [line(label, m["rows"][label]) for label in labels]
    return "\n".join(out)


def points_table(m: dict) -> str:
    """Every curve at its point (its own dev-chosen lambda, else PRSS's), paired against no mitigation."""
    out = ["| method at its point (test half) | copy rate change [95 % CI] | pixel Gu replication change | "
           "nearest-is-planted change | every-phrasing CLIP change | content CLIP change | held-out every-phrasing "
           "CLIP change (relative) |", "|---" * 7 + "|"]
    for curve, p in m.get("points", {}).items():
        v = p["vs_none"]
        at = "" if p.get("at") == curve else f", at {p.get('at')}'s"
        out.append(f"| {curve} (λ = {num(p['lambda'], 'g')}{at}) | {change(v.get('copy_rate'))} | "
                   f"{change(v.get('replication'))} | {change(v.get('nn_is_planted'))} | "
                   f"{change(v.get('clip_phrasings'))} | {change(v.get('clip_content'))} | "
                   f"{change(v.get('heldout_clip_phrasings_relative'))} |")
    return "\n".join(out) if len(out) > 2 else "n/a (not measured in this run)"


def groups_table(m: dict) -> str:
    """PRSS (both readings) per memorized group at its operating lambda, beside no mitigation."""
    none, ref = m["rows"]["none"], m.get("content_caption", {})
    out = ["| group | method | independent copy rate [95 % CI] | pixel Gu replication [95 % CI] | nearest is "
           "planted (content-caption chance) | copy rate change vs none | pixel change vs none |", "|---" * 7 + "|"]
    for g in MEMORIZED_GROUPS:
        chance = num(ref.get(f"nn_is_planted_{g}", NAN), ".2f")
        out.append(f"| {g} | none | {ci(none.get(f'copy_rate_{g}', NAN), none.get(f'copy_rate_ci_{g}'))} | "
                   f"{ci(none.get(f'replication_{g}', NAN), none.get(f'replication_ci_{g}'))} | "
                   f"{num(none.get(f'nn_is_planted_{g}', NAN), '.2f')} ({chance}) | | |")
        for curve, reading in READING.items():
            p = m.get("points", {}).get(curve)
            if p is None or g not in p.get("groups", {}):
                continue
            q, v = p["groups"][g], p["vs_none"]["groups"].get(g, {})
            out.append(f"| {g} | PRSS, {reading} (λ = {num(p['lambda'], 'g')}) | "
                       f"{ci(q['copy_rate'], q['copy_rate_ci95'])} | {ci(q['replication'], q['replication_ci95'])} | "
                       f"{num(q['nn_is_planted'], '.2f')} ({chance}) | {change(v.get('copy_rate'))} | "
                       f"{change(v.get('replication'))} |")
    return "\n".join(out) if len(out) > 2 + len(MEMORIZED_GROUPS) else "n/a (not measured in this run)"


def seed_table(m: dict, seed: str) -> str:
    """Testbed ``seed``: no mitigation, the content-caption reference, the main seed's operating points
    transferred and PRSS's own, each paired against no mitigation on that seed."""
    s = m.get("seeds", {}).get(seed)
    if not s:
        return "n/a (not measured in this run)"
    chance = s.get("nn_chance")
    out = [f"| testbed seed {seed} (test half) | {PRIVACY_HEADER} | every-phrasing CLIP [95 % CI] | content CLIP | "
           "held-out every-phrasing CLIP | held-out content CLIP | copy rate change vs none | pixel change vs none |",
           "|---" * 10 + "|"]
    out.append(f"| none | {privacy(s['rows']['none'], chance)} | {_util(s['rows']['none'])} | | |")
    out.append(f"| content caption alone (reference) | {privacy(s['content_caption'], chance)} | "
               f"{_util(s['content_caption'])} | | |")
    for label, p in s["points"].items():
        out.append(f"| {label} (λ = {num(p['lambda'], 'g')}) | {privacy(s['rows'][label], chance)} | "
                   f"{_util(s['rows'][label])} | {change(p['vs_none'].get('copy_rate'))} | "
                   f"{change(p['vs_none'].get('replication'))} |")
    return "\n".join(out)
