"""The generated blocks of the README and ``docs/`` (``memlib results``), built from the metrics files; never typed
in. Each block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers in whichever page holds it."""
from __future__ import annotations

import importlib
import json
import re
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


def _ci(v: float, ci: list) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _row_line(r: dict) -> str:
    name = "no mitigation" if r["method"] == "none" else f"{r['method']} ({r['knob']} = {r['value']:g})"
    return (f"| {name} | {_ci(r['replication_memorized'], r['replication_ci_memorized'])} | "
            f"{r['similarity_mean_memorized']:.3f} | {r['clip_content_memorized']:.3f} | "
            f"{r['clip_content_heldout']:.3f} | {r['frechet_heldout']:.3f} ({r['frechet_floor_heldout']:.3f}) | "
            f"{r['evals_per_image']:.0f} / {1e3 * r['seconds_per_image']:.0f} | {r['acted_heldout']:.2f} |")


def mitigation_findings(figures: Path | None = None) -> str:
    """Notebook 03's table (no mitigation, PE's sweep, each baseline at its strongest knob) and sentences."""
    path = (figures or repo_root() / "figures") / "03_mitigation" / "metrics.json"
    if not path.exists():
        return "notebook 03 not yet run"
    m = json.loads(path.read_text())["metrics"]
    rows = m["rows"]
    strongest = {}
    for r in rows:
        if r["method"] not in ("none", "wen_pe"):
            strongest[r["method"]] = r          # rows run weakest to strongest
    shown = [r for r in rows if r["method"] in ("none", "wen_pe")] + list(strongest.values())
    out = ["| method (test half) | replication [95 % CI] | NCC to planted | content CLIP | held-out CLIP | "
           "held-out Fréchet (floor) | evaluations / ms per image | acts on held-out |", "|---" * 8 + "|"]
    out += [_row_line(r) for r in shown]
    out.append("")
    if m.get("pe_replication_reduction") is not None:
        red = m["pe_replication_reduction"]
        out.append(f"- PE at l_target = {m['pe_operating_l_target']:g} (chosen on the dev half): pooled memorized "
                   f"replication {m['replication_rate_none']:.3f} → {m['pe_replication_rate']:.3f} "
                   f"({red:.0%} lower; the bar is 50 %, {'met' if red >= 0.5 else '**not met**'}), content-caption "
                   f"CLIP {m['clip_content_none']:.3f} → {m['pe_clip_content']:.3f}.")
    if "pe_untouched_bit_identical_share" in m:
        out.append(f"- Held-out test prompts already under that l_target: {m['pe_n_untouched']} "
                   f"({m['pe_heldout_untouched_share']:.0%}); their images are bit-identical to plain CFG for "
                   f"{m['pe_untouched_bit_identical_share']:.0%}.")
    wins, mt = m.get("pe_vs_random_token_wins"), m.get("matched_utility", {})
    if wins is not None:
        out.append(f"- PE against random-token addition at {len(mt['levels'])} matched content-CLIP levels: PE is "
                   f"less similar to the planted image at {wins}. " +
                   ("As in Wen et al. (Fig. 4a), PE's curve lies below." if wins >= 3 else
                    "**Reversal:** Wen et al. report PE's curve below random-token addition's; here it is not."))
    for row in m.get("filter_rows", []):
        if row["method"] == "unfiltered":
            base = row
    if m.get("filter_rows"):
        out.append(f"- Training-time filter (from scratch, equal steps and seed), verbatim replication / held-out "
                   f"CLIP / held-out Fréchet: unfiltered {base['replication_verbatim']:.2f} / "
                   f"{base['clip_content_heldout']:.3f} / {base['frechet_heldout']:.3f}; " + "; ".join(
                       f"tau {r['value']:g}: {_ci(r['replication_verbatim'], r['replication_ci_verbatim'])} / "
                       f"{_ci(r['clip_content_heldout'], r['clip_content_ci_heldout'])} / "
                       f"{_ci(r['frechet_heldout'], r['frechet_ci_heldout'])}"
                       for r in m["filter_rows"] if r["method"] == "wen_filter") + ".")
        filt = [r for r in m["filter_rows"] if r["method"] == "wen_filter"]
        lower = [r for r in filt if r["replication_ci_verbatim"][1] < base["replication_verbatim"]]
        out.append("- " + (f"The filter lowers verbatim replication beyond its interval at tau "
                           f"{', '.join(format(r['value'], 'g') for r in lower)}."
                           if lower else "**Reversal:** at no tau does the filter lower verbatim replication beyond "
                           "its interval; Wen et al. report that it mitigates.") + " It dropped " + ", ".join(
            f"{d['dropped_share']:.0%} of samples at {t.removeprefix('tau')} ({d['planted_share_of_drops']:.0%} of "
            f"them planted rows, which are {d['planted_share_of_rows']:.0%} of the data)"
            for t, d in m.get("filter_drops", {}).items()) + ". The Fréchet intervals resample prompts, which "
            "inflates the distance, so they need not contain the estimate.")
        auc = dict(zip(m["probe_timesteps"], m["probe_auc"]))
        out.append("- Probe (shipped checkpoint, planted vs ordinary training rows): magnitude AUC by timestep "
                   + ", ".join(f"t={t}: {a:.2f}" for t, a in auc.items()) + ".")
    return "\n".join(out)


def _cached_compute_seconds(path: Path) -> float:
    """Seconds a mitigation notebook's cached rows took to compute (seconds per image x images, every row)."""
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
        wall, compute = t["notebook_wall_s"], _cached_compute_seconds(path.parent / "metrics.json")
        total += max(wall, compute)
        shown = f"{wall / 60:.1f}" if compute <= wall else \
            f"{wall / 60:.1f} from its cache; computing its rows took {compute / 60:.1f} (summed from its metrics)"
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
BLOCKS = {"notebooks": notebooks_table, "results": results_table, "mitigation": mitigation_findings,
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
    values = {**m, **report.values(m), "claims": {c.name: c for c in report.claims(m)}}
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
