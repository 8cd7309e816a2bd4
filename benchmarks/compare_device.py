"""Reconcile another device's results with the committed CPU reference: every ``metrics.json`` under a run's
figures folder (e.g. a GPU ``make reproduce DEVICE=cuda``, copied to build/gpu/figures) against
``figures/<notebook>/metrics.json``, key by key (nested dicts and lists flattened), provenance skipped.

Rules, first that applies:
- interval: a number whose CPU file gives it an interval (a sibling ``<key>_ci95`` / ``<key>_ci``, ``<stem>_ci_<rest>``
  for ``<stem>_<rest>``, or a ``ci95`` / ``ci`` beside an ``estimate`` / ``mean`` / ``rate`` / ``value``) that holds
  the CPU value must lie inside that interval: the other device may move the estimate within its uncertainty,
  not beyond (an interval missing its own estimate, e.g. a biased Fréchet distance's, falls to the float rule);
- exact: integers (counts, ``n``, ``n_prompts``), booleans, strings and nulls must be equal;
- float: any other number must be within ``--atol`` + ``--rtol`` x |CPU value| (both NaN agree).
A key present on one side only, or a list of another length, disagrees.

    python benchmarks/compare_device.py build/gpu/figures [--reference figures] [--out build/compare_device.json]

Prints a table per notebook (agreements and disagreements by rule, then each disagreement) and exits 1 on any
disagreement, 0 when everything agrees.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RTOL, ATOL = 0.05, 1e-3      # floats: GPU kernels and half precision round differently along 50-step samplers
POINT_NAMES = ("estimate", "mean", "rate", "value")
INTERVAL_SUFFIXES = ("_ci95", "_ci")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_interval(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(_is_number(v) for v in x)


def interval_of(name: str, siblings: dict) -> list | None:
    """The CPU interval ``siblings`` give the number called ``name``, if any (see the module docstring)."""
    candidates = [name + s for s in INTERVAL_SUFFIXES]
    for i, ch in enumerate(name):
        if ch == "_":
            candidates += [name[:i] + s + name[i:] for s in INTERVAL_SUFFIXES]
    if name in POINT_NAMES:
        candidates += ["ci95", "ci"]
    return next((siblings[c] for c in candidates if c in siblings and _is_interval(siblings[c])), None)


def _row(key, ref, run, rule, ok, note=""):
    return {"key": key, "cpu": ref, "other": run, "rule": rule, "agrees": bool(ok), "note": note}


def compare_values(ref, run, key: str = "", interval: list | None = None, rtol: float = RTOL,
                   atol: float = ATOL) -> list[dict]:
    """One row per leaf of ``ref`` and ``run`` (nested dicts and lists flattened into dotted keys)."""
    if isinstance(ref, dict) and isinstance(run, dict):
        rows = []
        for k in sorted(set(ref) | set(run)):
            sub = f"{key}.{k}" if key else str(k)
            if k not in ref or k not in run:
                rows.append(_row(sub, ref.get(k), run.get(k), "present", False,
                                 "missing on the other device" if k in ref else "not in the CPU file"))
                continue
            rows += compare_values(ref[k], run[k], sub, interval_of(k, ref) if _is_number(ref[k]) else None,
                                   rtol, atol)
        return rows
    if isinstance(ref, list) and isinstance(run, list):
        if len(ref) != len(run):
            return [_row(key, len(ref), len(run), "length", False, "lists of different lengths")]
        return [r for i, (a, b) in enumerate(zip(ref, run)) for r in compare_values(a, b, f"{key}[{i}]", None, rtol,
                                                                                   atol)]
    if _is_number(ref) and _is_number(run):
        if isinstance(ref, int) and isinstance(run, int):
            return [_row(key, ref, run, "exact", ref == run)]
        a, b = float(ref), float(run)
        if math.isnan(a) or math.isnan(b) or a == b:
            return [_row(key, ref, run, "float", a == b or (math.isnan(a) and math.isnan(b)))]
        lo, hi = (min(interval), max(interval)) if interval is not None else (math.nan, math.nan)
        if lo - 1e-9 <= a <= hi + 1e-9:   # an interval that misses the CPU estimate (a biased one) is not its own
            return [_row(key, ref, run, "interval", lo - 1e-9 <= b <= hi + 1e-9, f"CPU interval [{lo:g}, {hi:g}]")]
        return [_row(key, ref, run, "float", abs(b - a) <= atol + rtol * abs(a),
                     f"|diff| {abs(b - a):.3g} vs {atol + rtol * abs(a):.3g}")]
    return [_row(key, ref, run, "exact", ref == run and type(ref) is type(run))]


def compare_folders(run: Path, reference: Path, rtol: float = RTOL, atol: float = ATOL) -> dict:
    """{notebook: rows} for every notebook with a ``metrics.json`` in ``run``; a notebook the reference lacks is one
    disagreeing row."""
    out = {}
    for path in sorted(Path(run).glob("*/metrics.json")):
        nb = path.parent.name
        ref_path = Path(reference) / nb / "metrics.json"
        if not ref_path.exists():
            out[nb] = [_row("metrics.json", None, str(path), "present", False, f"{ref_path} does not exist")]
            continue
        ref, other = json.loads(ref_path.read_text()), json.loads(path.read_text())
        out[nb] = compare_values(ref.get("metrics", {}), other.get("metrics", {}), rtol=rtol, atol=atol)
    return out


def _short(x) -> str:
    s = json.dumps(x) if not isinstance(x, str) else x
    return s if len(s) <= 24 else s[:21] + "..."


def table(results: dict, show_all: bool = False) -> str:
    lines = [f"{'notebook':<16}{'rule':<10}{'agree':>7}{'disagree':>10}"]
    for nb, rows in results.items():
        for rule in sorted({r["rule"] for r in rows}):
            sub = [r for r in rows if r["rule"] == rule]
            bad = sum(not r["agrees"] for r in sub)
            lines.append(f"{nb:<16}{rule:<10}{len(sub) - bad:>7}{bad:>10}")
    shown = [(nb, r) for nb, rows in results.items() for r in rows if show_all or not r["agrees"]]
    if shown:
        lines += ["", f"{'notebook':<16}{'key':<48}{'cpu':>26}{'other':>26}  {'rule':<9}verdict"]
        lines += [f"{nb:<16}{r['key'][:47]:<48}{_short(r['cpu']):>26}{_short(r['other']):>26}  {r['rule']:<9}"
                  f"{'agrees' if r['agrees'] else 'DISAGREES'} {r['note']}" for nb, r in shown]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="figures folder of the other device's run (holding <notebook>/metrics.json)")
    ap.add_argument("--reference", type=Path, default=Path("figures"), help="the CPU figures (default: figures)")
    ap.add_argument("--out", type=Path, default=None, help="write every row and the verdict here (json)")
    ap.add_argument("--rtol", type=float, default=RTOL, help=f"relative tolerance of plain floats ({RTOL})")
    ap.add_argument("--atol", type=float, default=ATOL, help=f"absolute tolerance of plain floats ({ATOL})")
    ap.add_argument("--all", action="store_true", help="list agreeing keys too")
    a = ap.parse_args(argv)
    results = compare_folders(a.run, a.reference, a.rtol, a.atol)
    if not results:
        print(f"no <notebook>/metrics.json under {a.run}", file=sys.stderr)
        return 2
    n_bad = sum(not r["agrees"] for rows in results.values() for r in rows)
    print(table(results, a.all))
    print(f"\n{'all agree' if not n_bad else f'{n_bad} disagreements'} ({a.run} vs {a.reference}; floats within "
          f"{a.atol:g} + {a.rtol:g} x |CPU|, interval keys inside the CPU interval, counts exact)")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"run": str(a.run), "reference": str(a.reference), "rtol": a.rtol,
                                     "atol": a.atol, "disagreements": n_bad, "notebooks": results}, indent=1) + "\n")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
