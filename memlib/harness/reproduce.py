"""``make reproduce``: execute every notebook in order with papermill, incrementally and safely.

- A notebook is skipped when its inputs are unchanged: its source, its parameters, the memlib code, the
  shipped checkpoints and the inputs of every notebook before it (so a change reruns everything downstream).
- Figures are written to a staging folder and moved into ``figures/<notebook>/`` only when the notebook
  succeeds; a failure keeps the figures of the last good run and reports the failing cell.
- ``--quick`` runs the same notebooks with tiny parameters into ``build/quick/`` (figures and checkpoints),
  never touching ``figures/``.
- Interrupted runs resume: training resumes from its last checkpoint and sweeps reuse cached points.

Usage: ``python -m memlib.reproduce [--quick] [--only 00_testbed] [--force]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..paths import repo_root

# Tiny parameters per notebook for --quick (and for the notebook tests): seconds, not minutes.
QUICK_PARAMS: dict[str, dict] = {
    "00_testbed": dict(data_preset="tiny", train_steps=20, clip_steps=20, n_gens=2, num_steps=5, progress=False),
    "01_detection": dict(data_preset="tiny", train_steps=20, clip_steps=20, positive_groups="verbatim", max_gens=2,
                         num_steps=10, batch_size=64, timing_prompts=2, progress=False),
    "02_explain": dict(data_preset="tiny", train_steps=20, clip_steps=20, n_gens=1, num_steps=3, attribution_steps=2,
                       max_prompts=2, illustrate_prompts=1, ig_points=4, progress=False),
}


@dataclass
class Outcome:
    notebook: str
    status: str          # ran | skipped | failed
    seconds: float = 0.0
    detail: str = ""


def notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _notebook_source_hash(path: Path) -> str:
    """Hash of cell sources only, so executing or re-saving a notebook does not count as a change."""
    cells = json.loads(path.read_text())["cells"]
    return hashlib.sha256(json.dumps([(c["cell_type"], c["source"]) for c in cells]).encode()).hexdigest()


def input_hashes(root: Path, nbs: list[Path], params: dict[str, dict], checkpoints: Path) -> dict[str, str]:
    # the memlib that will run (its source files); MEMLIB_CODE_DIR lets tests point elsewhere
    code_dir = Path(os.environ.get("MEMLIB_CODE_DIR", Path(__file__).parent))
    code = _hash_files(code_dir.rglob("*.py"))
    ckpt = _hash_files(checkpoints.glob("*/meta.json")) if checkpoints.exists() else ""
    out, chain = {}, ""
    for nb in nbs:
        blob = json.dumps([chain, _notebook_source_hash(nb), params.get(nb.stem, {}), code, ckpt], sort_keys=True)
        chain = hashlib.sha256(blob.encode()).hexdigest()
        out[nb.stem] = chain
    return out


def _failing_cell(exc: Exception) -> str:
    cell = getattr(exc, "exec_count", None)
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"cell [{cell}]: {name}: {str(value).splitlines()[0] if value else ''}"[:400]


def run_notebook(nb: Path, out_nb: Path, params: dict, figures: Path, env: dict[str, str]) -> None:
    """Execute ``nb`` into ``out_nb`` with figures staged, then moved into ``figures/<stem>``."""
    import papermill as pm

    staging = out_nb.parent / f"staging-{nb.stem}"  # same disk as figures/, outside it
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env, MEMLIB_FIGURES=str(staging), MEMLIB_UPSTREAM_FIGURES=str(figures))
    try:
        pm.execute_notebook(str(nb), str(out_nb), parameters=params, kernel_name="python3",
                            cwd=str(repo_root()), progress_bar=False)
    finally:
        os.environ.pop("MEMLIB_FIGURES", None)
        os.environ.pop("MEMLIB_UPSTREAM_FIGURES", None)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    target, produced = figures / nb.stem, staging / nb.stem
    if produced.exists():
        backup = figures / f".old-{nb.stem}"
        shutil.rmtree(backup, ignore_errors=True)
        if target.exists():
            os.replace(target, backup)
        os.replace(produced, target)
        shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def reproduce(quick: bool = False, only: list[str] | None = None, force: bool = False) -> list[Outcome]:
    root = repo_root()
    base = root / "build" / ("quick" if quick else "full")
    figures = base / "figures" if quick else root / "figures"
    checkpoints = base / "checkpoints" if quick else root / "checkpoints"
    for d in (base / "executed", base / "stamps", figures):
        d.mkdir(parents=True, exist_ok=True)
    env = {"MEMLIB_CHECKPOINTS": str(checkpoints), "HF_HUB_DISABLE_TELEMETRY": "1",
           "TQDM_DISABLE": "1" if quick else os.environ.get("TQDM_DISABLE", "0")}
    nbs = notebooks(root)
    unknown = sorted(set(only or []) - {n.stem for n in nbs})
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; choose from {[n.stem for n in nbs]}")
    params = {n.stem: (QUICK_PARAMS.get(n.stem, {}) if quick else {}) for n in nbs}
    hashes = input_hashes(root, nbs, params, checkpoints)
    outcomes, failed_upstream = [], False
    for nb in nbs:
        if only and nb.stem not in only:
            continue
        stamp = base / "stamps" / f"{nb.stem}.json"
        done = stamp.exists() and json.loads(stamp.read_text()).get("inputs") == hashes[nb.stem]
        if done and not force and (figures / nb.stem / "metrics.json").exists():
            outcomes.append(Outcome(nb.stem, "skipped", detail="inputs unchanged"))
            print(f"[skip] {nb.stem}: inputs unchanged", flush=True)
            continue
        if failed_upstream:
            outcomes.append(Outcome(nb.stem, "failed", detail="not run: an upstream notebook failed"))
            continue
        print(f"[run ] {nb.stem} ...", flush=True)
        t0 = time.time()
        try:
            run_notebook(nb, base / "executed" / nb.name, params[nb.stem], figures, env)
        except Exception as e:  # report and keep going: earlier figures stay in place
            outcomes.append(Outcome(nb.stem, "failed", time.time() - t0, _failing_cell(e)))
            print(f"[FAIL] {nb.stem}: {_failing_cell(e)} (see {base / 'executed' / nb.name})", flush=True)
            failed_upstream = True
            continue
        # stamps are written only after success; checkpoints a notebook made change later hashes
        stamp.write_text(json.dumps({"inputs": hashes[nb.stem]}))
        outcomes.append(Outcome(nb.stem, "ran", time.time() - t0))
        print(f"[ ok ] {nb.stem} in {time.time() - t0:.0f} s", flush=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny parameters, outputs under build/quick")
    ap.add_argument("--only", nargs="*", help="notebook stems to run (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun even if inputs are unchanged")
    a = ap.parse_args(argv)
    outcomes = reproduce(a.quick, a.only, a.force)
    print("\nnotebook            status   seconds  detail")
    for o in outcomes:
        print(f"{o.notebook:<19} {o.status:<8} {o.seconds:7.0f}  {o.detail}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
