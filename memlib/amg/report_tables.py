"""Notebook 04's results tables (Chen, Liu, Xu, CVPR 2024), from the metrics dict alone: every row with the three
privacy columns (independent copy rate, the paper's pixel Gu ratio, nearest-is-planted beside its chance level),
the paired changes against no mitigation, the further testbeds beside seed 0, and the digits. A value a run did
not measure (an older metrics file) shows as n/a."""
from __future__ import annotations

import math

from ..mitigate.columns import PRIVACY_HEADER
from ..mitigate.evalset import MEMORIZED_GROUPS

NAN = float("nan")
# the testbed table's rows, in the order of the paper's tables (any other row follows)
CODE_C1_ROW = "AMG, released-code c1 = 13"   # Main with the released code's despecification scale
DESCRIPTOR_ROW = "AMG Main, descriptor sigma"  # Main with sigma = the copy detector's descriptor cosine
WEN_PE_ROW = "Wen PE, notebook 03's operating point"
TRANSFER, OWN = "AMG Main, seed 0's c3", "AMG Main, own dev c3"   # further testbeds
ROW_ORDER = ["none", "AMG Main", "AMG Strong", "AMG, released-code gating", CODE_C1_ROW, "spe", "dup", "sim",
             "spe+dup", "spe+sim", "dup+sim", "dup, y_N = top-k caption", "switch always on", "constant threshold",
             DESCRIPTOR_ROW, WEN_PE_ROW]
GAMED = " (gamed: it optimised this detector)"


def num(v, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "n/a"


def with_ci(value, ci, fmt: str = ".3f") -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return num(value, fmt)
    return f"{num(value, fmt)} [{num(ci[0], fmt)}, {num(ci[1], fmt)}]"


def change(p: dict | None) -> str:
    """A paired change with its interval ('n/a' when not measured); relative changes as percentages."""
    if not p:
        return "n/a"
    fmt = "+.1%" if p.get("relative") else "+.3f"
    return with_ci(p["estimate"], p["ci95"], fmt)


def privacy(r: dict, chance=NAN, gamed: bool = False) -> str:
    """The three privacy cells (``memlib.mitigate.columns.PRIVACY_HEADER``'s order) of a metrics row."""
    copy = with_ci(r.get("copy_rate_memorized", NAN), r.get("copy_rate_ci_memorized")) + (GAMED if gamed else "")
    return (f"{copy} | {with_ci(r.get('replication_memorized', NAN), r.get('replication_ci_memorized'))} | "
            f"{num(r.get('nn_is_planted_memorized', NAN), '.2f')} ({num(chance, '.2f')})")


def _rows_in_order(rows: dict) -> list[str]:
    return [k for k in ROW_ORDER if k in rows] + [k for k in rows if k not in ROW_ORDER]


def testbed_table(m: dict) -> str:
    """Tables 1, 4 and 5 on the testbed's test half, one row per run."""
    chance = m.get("nn_is_planted_chance", NAN)
    out = [f"| AMG on the testbed (test half) | {PRIVACY_HEADER} | low-pass Gu | verbatim / image dup / caption dup "
           "(pixel Gu) | NCC to planted | content CLIP | every-phrasing CLIP | held-out CLIP | held-out Fréchet "
           "(floor) | evaluations per image |", "|---" * 12 + "|"]
    for label in _rows_in_order(m["rows"]):
        r = m["rows"][label]
        groups = " / ".join(num(r.get(f"replication_{g}", NAN), ".2f") for g in MEMORIZED_GROUPS)
        out.append(f"| {label} | {privacy(r, chance, 'copy_rate' in r.get('gamed_columns', []))} | "
                   f"{num(r.get('lowpass_replication_memorized', NAN))} | {groups} | "
                   f"{num(r['similarity_mean_memorized'])} | {num(r['clip_content_memorized'])} | "
                   f"{num(r.get('clip_phrasings_memorized', NAN))} | {num(r['clip_content_heldout'])} | "
                   f"{num(r.get('frechet_heldout', NAN))} ({num(r.get('frechet_floor_heldout', NAN))}) | "
                   f"{num(r['evals_per_image'], '.0f')} |")
    return "\n".join(out)


def paired_table(m: dict) -> str:
    """Each test-half row's change against no mitigation, over the same prompts and noises (95 % intervals
    resampling planted images)."""
    paired = m.get("paired_vs_none", {})
    if not paired:
        return "(paired changes not measured in this run)"
    out = ["| change against no mitigation (test half, paired) | independent copy rate | pixel Gu replication | "
           "low-pass Gu | nearest is planted | every-phrasing CLIP (relative) |", "|---" * 6 + "|"]
    for label in _rows_in_order(paired):
        p = paired[label]
        gamed = GAMED if "copy_rate" in m["rows"].get(label, {}).get("gamed_columns", []) else ""
        out.append(f"| {label} | {change(p.get('copy'))}{gamed} | {change(p.get('replication'))} | "
                   f"{change(p.get('lowpass'))} | {change(p.get('nn_planted'))} | "
                   f"{change(p.get('clip_phrasings_relative'))} |")
    return "\n".join(out)


def seeds_table(m: dict) -> str:
    """Seed 0's no mitigation and Main beside each further testbed's no mitigation, Main transferred and Main at
    its own dev-chosen c3, with the paired changes against that seed's no mitigation."""
    seeds = m.get("seeds", {})
    if not seeds:
        return "(no further testbed in this run)"
    out = ["| testbed seed, row | c3 | " + PRIVACY_HEADER + " | every-phrasing CLIP | copy rate change vs none | "
           "pixel Gu change vs none |", "|---" * 8 + "|"]
    zero = m.get("paired_vs_none", {}).get("AMG Main", {})
    for label, r, c3, p in (("none", m["rows"]["none"], NAN, {}), ("AMG Main", m["rows"]["AMG Main"], m["main_c3"],
                                                                     zero)):
        out.append(f"| 0, {label} | {num(c3, 'g')} | {privacy(r, m.get('nn_is_planted_chance', NAN))} | "
                   f"{num(r.get('clip_phrasings_memorized', NAN))} | {change(p.get('copy'))} | "
                   f"{change(p.get('replication'))} |")
    for seed, s in seeds.items():
        for label, c3 in (("none", NAN), (TRANSFER, s["transfer_c3"]), (OWN, s["own_c3"])):
            r, p = s["rows"][label], s["paired_vs_none"].get(label, {})
            out.append(f"| {seed}, {label} | {num(c3, 'g')} | {privacy(r, s['chance_nn_planted'])} | "
                       f"{num(r.get('clip_phrasings_memorized', NAN))} | {change(p.get('copy'))} | "
                       f"{change(p.get('replication'))} |")
    return "\n".join(out)


def digits_table(m: dict) -> str:
    """Tables 2-3 on the digits DDPMs (test seeds): no guidance, Main and Strong per model, with the digits' copy
    detector beside the pixel criteria and the paired changes against no guidance."""
    out = ["| digits (test seeds) | independent copy rate [95 % CI] | Gu replication [95 % CI] | low-pass Gu | "
           "planted copies | nL2 < 1.4 | nL2 5th pct | Fréchet (floor) | switch fired | copy rate change | "
           "Gu change |", "|---" * 11 + "|"]
    for name, d in m["digits"].items():
        for label in ("none", "AMG Main", "AMG Strong"):
            r, p = d["test"][label], d.get("paired_vs_none", {}).get(label, {})
            out.append(f"| {name}, {label} | {with_ci(r.get('copy_rate', NAN), r.get('copy_rate_ci'))} | "
                       f"{with_ci(r['gu_replication'], r['gu_replication_ci'])} | "
                       f"{num(r.get('lowpass_replication', NAN))} | {num(r['planted_replication'])} | "
                       f"{num(r['nl2_below_1.4'])} | {num(r['nl2_p5'], '.2f')} | {num(r['frechet'], '.2f')} "
                       f"({num(r['frechet_floor'], '.2f')}) | {num(r['fired_share'], '.2f')} | "
                       f"{change(p.get('copy')) if label != 'none' else '—'} | "
                       f"{change(p.get('gu')) if label != 'none' else '—'} |")
    return "\n".join(out)
