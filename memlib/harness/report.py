"""The generated blocks of the README and ``docs/`` (``memlib results``), built from the metrics files; never typed
in. Each block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers in whichever page holds it."""
from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from pathlib import Path

from ..paths import repo_root
from .notebooks import NOTEBOOKS


def _headlines() -> list[tuple[str, str, str, str]]:
    """(notebook, metric key, what it is, target), from the modules whose results write those keys."""
    return [(nb.stem, *row) for nb in NOTEBOOKS for row in importlib.import_module(nb.package).HEADLINES]


def _metrics(figures: Path, stem: str) -> dict | None:
    path = figures / stem / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _shown(m: dict, key: str) -> str:
    v = m.get(key)
    shown = f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"
    if isinstance(m.get(f"{key}_ci95"), list):   # a 95 % interval beside the value
        shown += " [{:.3f}, {:.3f}]".format(*m[f"{key}_ci95"])
    return shown


def notebooks_table(figures: Path | None = None) -> str:
    """One row per notebook: its question, its headline metric and one figure (the README's table)."""
    figures = figures or repo_root() / "figures"
    rows = ["| notebook | question | headline ([all results](docs/results.md)) | figure |", "|---|---|---|---|"]
    for nb in NOTEBOOKS:
        body = _metrics(figures, nb.stem)
        value = "not yet run"
        if body:
            m = body["metrics"]
            value = (f"{m[nb.before]:.3f} → " if isinstance(m.get(nb.before), (int, float)) else "") + \
                f"**{_shown(m, nb.headline)}**"
        rows.append(f"| [`{nb.stem}`](notebooks/{nb.stem}.ipynb) | {nb.question} | {nb.label}: {value} | "
                    f"[{nb.figure}](figures/{nb.stem}/{nb.figure}) |")
    return "\n".join(rows)


def results_table(figures: Path | None = None) -> str:
    figures = figures or repo_root() / "figures"
    rows = ["| notebook | metric | value | target | commit |", "|---|---|---|---|---|"]
    for nb, key, what, target in _headlines():
        body = _metrics(figures, nb)
        if body is None:
            rows.append(f"| {nb} | {what} | not yet run | {target} | |")
            continue
        rows.append(f"| {nb} | {what} (`{key}`) | {_shown(body['metrics'], key)} | {target} | "
                    f"{body['provenance']['git_commit'][:10]} |")
    return "\n".join(rows)


def _cached_compute_seconds(folder: Path) -> float:
    """Seconds a mitigation notebook's cached rows took to compute: seconds per image x images over every row,
    from its timings.json (``rows``, written by the study) or, for a run that kept them there, its metrics."""
    timings = folder / "timings.json"
    t = json.loads(timings.read_text()) if timings.exists() else {}
    if isinstance(t.get("rows"), list):
        return float(sum(r["seconds_per_image"] * r["images"] for r in t["rows"]))
    path = folder / "metrics.json"
    if not path.exists():
        return 0.0
    m = json.loads(path.read_text())["metrics"]

    def listed(v):   # rows are a list, a {label: row} dict, or a {schedule: [rows]} dict
        v = list(v.values()) if isinstance(v, dict) else list(v)
        return [r for x in v for r in (x if isinstance(x, list) else [x])]

    rows = [r for k in ("rows", "dev_rows", "filter_rows", "dev_sweep") for r in listed(m.get(k, []))
            if isinstance(r, dict) and "seconds_per_image" in r]
    return float(sum(r.get("seconds_per_image", 0.0) * r.get("n_gens", 0) *
                     sum(v for k, v in r.items() if k.startswith("n_prompts_")) for r in rows))


def timings_table(figures: Path | None = None) -> str:
    """Each notebook's wall time in the run that made its committed figures (``make reproduce`` records it)."""
    figures = figures or repo_root() / "figures"
    rows = ["| notebook | wall time (min) | machine |", "|---|---|---|"]
    total = 0.0
    for path in sorted(figures.glob("*/timings.json")):
        t = json.loads(path.read_text())
        if "notebook_wall_s" not in t:
            rows.append(f"| {path.parent.name} | not recorded (rerun with `make reproduce`) | |")
            continue
        wall, compute = t["notebook_wall_s"], _cached_compute_seconds(path.parent)
        total += max(wall, compute)
        shown = f"{wall / 60:.1f}" if compute <= wall else \
            f"{wall / 60:.1f} from its cache; computing its rows took {compute / 60:.1f} (summed over its rows)"
        rows.append(f"| {path.parent.name} | {shown} | {t['notebook_cores']} cores, {t['notebook_cpu']} |")
    rows.append(f"| **all** | **{total / 60:.1f}** | |")
    return "\n".join(rows)


def cli_times_table(results: Path | None = None) -> str:
    """The ``memlib`` commands' wall times on the testbed (``benchmarks/cli_times.py``), with each method's cost."""
    path = results or repo_root() / "benchmarks" / "results" / "cli_times.json"
    if not path.exists():
        return "not yet measured: run `.venv/bin/python benchmarks/cli_times.py`"
    b = json.loads(path.read_text())
    rows = ["| command (shipped testbed, a fresh process each) | wall time (s) | cost |", "|---|---|---|"]
    for r in b["runs"]:
        cost = ""
        if "model_evals_per_image" in r:
            cost = (f"{r['model_evals_per_image']:.0f} model evaluations per image (plain CFG "
                    f"{r['plain_cfg_evals_per_image']}), {r['seconds_per_image']:.2f} s per image; acted on "
                    f"{r['acted']} of {r['images']} images")
        elif "summary" in r and "auc" in r["summary"]:
            s = r["summary"]
            cost = (f"{s['n_memorized']} memorized vs {s['n_not_memorized']} not: AUC {s['auc']:.3f}; flagged "
                    f"{s.get('n_flagged', 0)} of {s['n_prompts']}")
        status = "" if r["returncode"] == 0 else f" (exit {r['returncode']})"
        rows.append(f"| `{' '.join(r['argv'][:2])}` {r['command'].split(' ', 1)[1] if ' ' in r['command'] else ''}"
                    f" | {r['seconds']:.1f}{status} | {cost} |")
    m = b["machine"]
    rows.append(f"\nMeasured on {m['cores']} cores, {m['cpu']} ({m['device']}).")
    return "\n".join(rows)


# block name -> what fills it; a page may hold any of them. A notebook whose paper package has a report module
# and a page template (docs/templates/<stem>.md) fills its block from them (``paper_block``).
BLOCKS = {"notebooks": notebooks_table, "results": results_table,
          "timings": timings_table, "cli": cli_times_table}
PAGES = ("README.md", "docs/results.md", "docs/cli.md")


def template_path(stem: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "docs" / "templates" / f"{stem}.md"


def paper_block(stem: str, figures: Path | None = None, root: Path | None = None) -> str:
    """Notebook ``stem``'s block: its report module's values and claims, computed from its committed metrics,
    rendered through its page template (the sentences live in the template, not in code)."""
    from ..claims import render
    from .notebooks import BY_STEM

    body = _metrics(figures or repo_root() / "figures", stem)
    if body is None:
        return f"notebook {stem} not yet run"
    report = importlib.import_module(BY_STEM[stem].package)
    m = body["metrics"]
    timings = (figures or repo_root() / "figures") / stem / "timings.json"
    values = {**m, **report.values(m), "claims": {c.name: c for c in report.claims(m)},
              "timings": defaultdict(lambda: float("nan"), json.loads(timings.read_text()) if timings.exists() else {})}
    path = template_path(stem, root)
    return render(path.read_text().strip(), values, where=str(path))


def _builders(root: Path) -> dict:
    builders = dict(BLOCKS)
    for nb in NOTEBOOKS:
        if nb.block and template_path(nb.stem, root).exists():
            builders[nb.block] = lambda stem=nb.stem: paper_block(stem, root=root)
    return builders


def fill_blocks(page: Path, root: Path | None = None) -> bool:
    """Replace every generated block ``page`` holds; True if the page changed."""
    builders = _builders(root or repo_root())
    text = page.read_text()
    new = text
    for name, build in builders.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if (begin in new) != (end in new):
            raise ValueError(f"{page} has only one of the markers {begin} / {end}: restore the other")
        if begin in new:
            body = build()
            new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", new,
                         flags=re.S)
    if new != text:
        page.write_text(new)
    return new != text


def update_pages(root: Path | None = None) -> list[Path]:
    """Fill the generated blocks of the README and the docs pages; returns the pages that changed."""
    root = root or repo_root()
    return [root / p for p in PAGES if (root / p).exists() and fill_blocks(root / p, root)]
