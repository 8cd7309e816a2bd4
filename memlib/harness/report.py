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
        m = body["metrics"]
        v = m.get(key)
        shown = f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"
        if isinstance(m.get(f"{key}_ci95"), list):   # a 95 % interval beside the value
            shown += " [{:.3f}, {:.3f}]".format(*m[f"{key}_ci95"])
        rows.append(f"| {nb} | {what} (`{key}`) | {shown} | {target} | {body['provenance']['git_commit'][:10]} |")
    return "\n".join(rows)


DET_BEGIN, DET_END = "<!-- detection:begin -->", "<!-- detection:end -->"


def _ci(v: float, ci: list) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def detection_table(figures: Path | None = None) -> str:
    """Notebook 01's first-step, one-generation detection per negative source and testbed seed (test half)."""
    path = (figures or repo_root() / "figures") / "01_detection" / "metrics.json"
    if not path.exists():
        return "notebook 01 not yet run"
    m = json.loads(path.read_text())["metrics"]
    if "per_seed" not in m:
        return "notebook 01's metrics predate the per-seed table; rerun it"
    rows = ["| negatives (test half) | testbed seed | AUC [95 % CI] | TPR [95 % CI] | statistic | #pos / #neg |",
            "|---|---|---|---|---|---|"]
    hard = m["hard_negatives"]
    for src in m["per_seed"][str(m["testbed_seeds"][0])]:
        if not src.startswith("vs_"):
            continue
        neg = src[3:]
        for seed in m["testbed_seeds"]:
            c = m["per_seed"][str(seed)][src]
            rows.append(f"| {neg} | {seed} | {_ci(c['auc_first_step_1gen'], c['auc_first_step_1gen_ci95'])} | "
                        f"{_ci(c['tpr1fpr_first_step_1gen'], c['tpr1fpr_first_step_1gen_ci95'])} | "
                        f"{c['tpr_statistic']} | {c['n_pos']} / {c['n_neg']} |")
        pre = "" if neg == hard else f"vs_{neg}_"
        rows.append(f"| {neg} | **mean of {m['n_testbed_seeds']}** | "
                    f"{_ci(m[pre + 'auc_first_step_1gen'], m[pre + 'auc_first_step_1gen_ci95'])} | "
                    f"{_ci(m[pre + 'tpr1fpr_first_step_1gen'], m[pre + 'tpr1fpr_first_step_1gen_ci95'])} | "
                    f"{m[pre + 'tpr_statistic_first_step_1gen']} | |")
    return "\n".join(rows + ["", *_replication_rows(m)])


def _replication_rows(m: dict) -> list[str]:
    """Notebook 00's headline on every seed, as notebook 01 measures it: share of generations that copy."""
    seeds = [str(s) for s in m["testbed_seeds"]]
    sets = list(dict.fromkeys(g for s in seeds for g in m["per_seed"][s].get("replication", {})))
    if not sets:
        return []
    rows = ["| testbed seed | " + " | ".join(f"{g} copies" for g in sets) + " | positives |",
            "|---" * (len(sets) + 2) + "|"]
    for s in seeds:
        ps = m["per_seed"][s]
        rows.append(f"| {s} | " + " | ".join(f"{ps['replication'][g]:.3f}" if g in ps["replication"] else ""
                                            for g in sets) + f" | {', '.join(ps['positives'])} |")
    return rows


TIME_BEGIN, TIME_END = "<!-- timings:begin -->", "<!-- timings:end -->"


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
        total += t["notebook_wall_s"]
        rows.append(f"| {path.parent.name} | {t['notebook_wall_s'] / 60:.1f} | {t['notebook_cores']} cores, "
                    f"{t['notebook_cpu']} |")
    rows.append(f"| **all** | **{total / 60:.1f}** | |")
    return "\n".join(rows)


def _replace(text: str, begin: str, end: str, body: str, readme: Path) -> str:
    if begin not in text or end not in text:
        raise ValueError(f"{readme} lacks the markers {begin} ... {end}")
    return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def update_readme(readme: Path | None = None) -> bool:
    """Replace the blocks between the results (and detection) markers; returns True if the README changed."""
    readme = readme or repo_root() / "README.md"
    text = readme.read_text()
    new = _replace(text, BEGIN, END, results_table(), readme)
    if DET_BEGIN in new:
        new = _replace(new, DET_BEGIN, DET_END, detection_table(), readme)
    if TIME_BEGIN in new:
        new = _replace(new, TIME_BEGIN, TIME_END, timings_table(), readme)
    readme.write_text(new)
    return new != text
