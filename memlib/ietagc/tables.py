"""Table helpers shared by notebook 06's reports (IET-AGC+; Liu et al., ECCV 2024; Guan et al., arXiv
2502.09434): number formats, run kinds and labels, and the under-fitting table, from the metrics alone."""
from __future__ import annotations

import math

LABELS = {"baseline": "baseline", "iet": "IET", "agc": "IET+AGC", "msr": "IET+AGC+MSR",
          "full": "IET+AGC+MSR+TAA (full)", "long": "baseline, 2x visits",
          "bigbatch": "baseline, K x batch, steps / K", "annealed": "baseline, annealed at a smaller budget"}


def _f(v, fmt=".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def run_kind(run: str) -> str:
    """'baseline', 'iet', ..., 'annealed' from a run name such as 'iet-s0' or 'annealed-b750-s0'."""
    return run.split("-", 1)[0]


_kind = run_kind


def _table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] +
                     ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _ci(v, ci, fmt=".3f") -> str:
    shown = _f(v, fmt)
    return shown + (f" [{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]" if isinstance(ci, list) else "")


def underfit_table(m: dict) -> str:
    """Each final model's samples against real held-out digits: the share whose nearest training distance d1
    (and whose memorization ratio) lies above the real digits' median. Real unseen data give 0.5; well above
    0.5 means samples farther from the data than unseen digits are (under-fitting), not fewer copies."""
    order = list(LABELS)
    c = dict(sorted(m["components"].items(), key=lambda kv: (order.index(_kind(kv[0])), kv[0])))
    rows = [[f"{r['label']} (`{n}`)", _ci(r["farther_than_real_share"], r.get("farther_than_real_share_ci")),
             _f(r.get("ratio_above_real_share")), _f(r["d1_quantiles"][2], ".2f"), _f(r["ratio_quantiles"][2])]
            for n, r in c.items() if "farther_than_real_share" in r]
    ref = m.get("underfit_heldout_real")
    if not rows or not ref:
        return "(not measured: these metrics predate the under-fitting check)"
    rows.append(["real held-out digits (never trained on)", _f(ref["farther_than_real_share"]),
                 _f(ref["ratio_above_real_share"]), _f(ref["d1_quantiles"][2], ".2f"), _f(ref["ratio_quantiles"][2])])
    return _table(["run", "share farther than real unseen digits (d1 above their median) [95 % CI]",
                   "share with the memorization ratio above theirs", "median d1", "median ratio"], rows)
