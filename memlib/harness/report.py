"""The README's results table, generated from the metrics files (``memlib results``); never typed in."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..paths import repo_root


def _headlines() -> list[tuple[str, str, str, str]]:
    """(notebook, metric key, what it is, target), from the modules whose results write those keys."""
    from ..testbed import evaluate
    from ..wen import detect, explain_results

    return [(nb, *row) for nb, mod in (("00_testbed", evaluate), ("01_detection", detect),
                                       ("02_explain", explain_results)) for row in mod.HEADLINES]


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_table(figures: Path | None = None) -> str:
    figures = figures or repo_root() / "figures"
    rows = ["| notebook | metric | value | target | commit |", "|---|---|---|---|---|"]
    for nb, key, what, target in _headlines():
        path = figures / nb / "metrics.json"
        if not path.exists():
            rows.append(f"| {nb} | {what} | not yet run | {target} | |")
            continue
        body = json.loads(path.read_text())
        v = body["metrics"].get(key)
        shown = f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"
        rows.append(f"| {nb} | {what} (`{key}`) | {shown} | {target} | {body['provenance']['git_commit'][:10]} |")
    return "\n".join(rows)


def update_readme(readme: Path | None = None) -> bool:
    """Replace the block between the results markers; returns True if the README changed."""
    readme = readme or repo_root() / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {BEGIN} ... {END}")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{results_table()}\n{END}",
                 text, flags=re.S)
    readme.write_text(new)
    return new != text
