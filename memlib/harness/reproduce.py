"""``make reproduce``: execute every notebook in order with papermill, incrementally and safely.

- A notebook is skipped when its inputs are unchanged (its source, its parameters, the memlib code and the
  inputs of every notebook before it, so a change reruns everything downstream; and the checkpoints it read or
  wrote, as they were when its run ended) AND its figures folder still holds exactly the files its stamp
  recorded (by SHA-256); anything missing, changed or added, e.g. by a notebook run by hand, is regenerated.
  A checkpoint a notebook writes is recorded as it left it, so a second unchanged run skips everything.
- Each run executes in a staging folder of its own and moves its figures into ``figures/<notebook>/`` under a
  lock only when the notebook succeeds, so a failure keeps the figures of the last good run and two concurrent
  runs never delete each other's work. ``executed/<notebook>.ipynb`` is always the run the stamp describes; a
  failed or interrupted run is kept as ``<notebook>.failed.ipynb`` / ``<notebook>.interrupted.ipynb``.
- ``--quick`` runs the same notebooks with tiny parameters into ``build/quick/`` (figures and checkpoints),
  never touching ``figures/``.
- Interrupted runs resume: training resumes from its last checkpoint and sweeps reuse cached points. Ctrl-C
  prints what ran, what was skipped and what was interrupted.
- ``--device`` / ``--dtype`` become every notebook's ``device`` / ``dtype`` parameters (default: the notebooks'
  own, 'auto' and 'fp32'). A stamp records where its run computed (``compute``: 'cpu:fp32', 'cuda:fp16', ...),
  and a notebook last run on another device or in another precision runs again. The committed figures are the
  CPU reference; ``benchmarks/compare_device.py`` checks another device's metrics against them.

Usage: ``python -m memlib.harness.reproduce [--quick] [--only 00_testbed ...] [--force] [--device cuda]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..cache import file_lock, tree_hash
from ..checkpoint import USE_LOG_ENV, _alive, file_sha256
from ..device import CPU, Compute, compute
from ..paths import code_dir, repo_root
from .notebooks import QUICK_PARAMS

# checkpoint folders that are not the real thing: set aside, half-written or being replaced
_NOT_A_CHECKPOINT = re.compile(r"\.(corrupt|tmp|old)")


@dataclass
class Outcome:
    notebook: str
    status: str          # ran | skipped | failed | interrupted | not run
    seconds: float = 0.0
    detail: str = ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``reproduce``; ``outcomes`` says what ran, was skipped, interrupted or not run."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes


def notebooks(root: Path) -> list[Path]:
    """The project's notebooks in order (``memlib.harness.notebooks.NOTEBOOKS`` lists the real ones; a test checks
    that the table and the folder agree)."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _notebook_source_hash(path: Path) -> str:
    """Hash of cell sources only, so executing or re-saving a notebook does not count as a change."""
    cells = json.loads(path.read_text())["cells"]
    return hashlib.sha256(json.dumps([(c["cell_type"], c["source"]) for c in cells]).encode()).hexdigest()


def checkpoint_record(checkpoints: Path, folders) -> dict[str, str]:
    """{folder name: hash of every ``meta.json`` under it (a run keeps its own in ``final/``), or "missing"} for
    the top-level checkpoint folders under ``checkpoints`` that hold any of ``folders``."""
    root = checkpoints.resolve()
    names = set()
    for f in folders:
        try:
            rel = Path(f).resolve().relative_to(root)
        except ValueError:
            continue      # a checkpoint outside this run's folder (e.g. a user's model): not ours to track
        if rel.parts and not _NOT_A_CHECKPOINT.search(rel.parts[0]):
            names.add(rel.parts[0])
    out = {}
    for name in sorted(names):
        metas = sorted(m for m in (checkpoints / name).rglob("meta.json")
                       if not any(_NOT_A_CHECKPOINT.search(p) for p in m.relative_to(checkpoints).parts))
        h = hashlib.sha256()
        for m in metas:
            h.update(m.relative_to(checkpoints).as_posix().encode() + b"\0" + m.read_bytes())
        out[name] = h.hexdigest() if metas else "missing"
    return out


def input_hashes(root: Path, nbs: list[Path], params: dict[str, dict]) -> dict[str, str]:
    code = tree_hash(code_dir())  # the whole memlib package that will run ($MEMLIB_CODE_DIR in tests)
    out, chain = {}, ""
    for nb in nbs:
        blob = json.dumps([chain, _notebook_source_hash(nb), params.get(nb.stem, {}), code], sort_keys=True)
        chain = hashlib.sha256(blob.encode()).hexdigest()
        out[nb.stem] = chain
    return out


def folder_files(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (what a stamp records)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def upstream_metrics(figures: Path, stems: list[str]) -> str:
    """Hash of the ``metrics.json`` of the notebooks ``stems`` (those before one): a notebook may read its
    predecessors' results, so it runs again when they change (metrics are byte-identical on a rerun)."""
    h = hashlib.sha256()
    for stem in stems:
        m = figures / stem / "metrics.json"
        h.update(stem.encode() + b"\0" + (file_sha256(m).encode() if m.exists() else b"none") + b"\0")
    return h.hexdigest()


def read_stamp(stamp: Path) -> dict | None:
    """The stamp's record, or None (with a note) when it is damaged: the notebook then simply runs again."""
    try:
        body = json.loads(stamp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        print(f"[note] {stamp} is damaged; its notebook runs again and the stamp is rewritten", flush=True)
        return None
    return body


def stale_reason(stamp: Path, inputs: str, folder: Path, checkpoints: Path | None = None,
                 upstream: str | None = None, compute_tag: str | None = None) -> str | None:
    """Why the notebook must run again, or None when its inputs, the checkpoints it used, the results of the
    notebooks before it, where it computed (``compute_tag``; a stamp without one was made on the CPU in fp32) and
    its figures are as the stamp records."""
    if not stamp.exists():
        return "never ran"
    body = read_stamp(stamp)
    if body is None:
        return "damaged stamp"
    if body.get("inputs") != inputs:
        return "inputs changed"
    if compute_tag is not None and body.get("compute", CPU.tag) != compute_tag:
        return f"computed on {body.get('compute', CPU.tag)}, now on {compute_tag}"
    if upstream is not None and body.get("upstream", upstream) != upstream:
        return "an earlier notebook's results changed"
    used = body.get("checkpoints")
    if checkpoints is not None and isinstance(used, dict):
        now = checkpoint_record(checkpoints, [checkpoints / n for n in used])
        changed = sorted(n for n in used if now.get(n, "missing") != used[n])
        if changed:
            return f"checkpoints changed: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}"
    recorded, present = body.get("files"), folder_files(folder)
    if not recorded or "metrics.json" not in recorded:
        return "no record of its figures"
    missing = sorted(set(recorded) - set(present))
    changed = sorted(k for k in recorded if k in present and present[k] != recorded[k])
    added = sorted(set(present) - set(recorded))
    for what, names in (("missing", missing), ("changed", changed), ("not from this run", added)):
        if names:
            return f"figures {what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
    return None


def _failing_cell(exc: Exception) -> str:
    cell = getattr(exc, "exec_count", None)
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"cell [{cell}]: {name}: {str(value).splitlines()[0] if value else ''}"[:400]


@contextmanager
def _environ(env: dict[str, str]):
    """Set environment variables (the kernel inherits them) and restore the old values afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _write_json(path: Path, body: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _install(produced: Path, target: Path) -> None:
    """Replace ``target`` by ``produced`` (caller holds the folder's lock)."""
    for stale in target.parent.glob(f".old-{target.name}-*"):  # left by a killed run: our own backup copies
        shutil.rmtree(stale, ignore_errors=True)
    if not produced.exists():
        return
    backup = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        os.replace(target, backup)
    os.replace(produced, target)
    shutil.rmtree(backup, ignore_errors=True)


def _is_interrupt(e: BaseException) -> bool:
    return isinstance(e, KeyboardInterrupt) or getattr(e, "ename", None) == "KeyboardInterrupt"


def record_wall_time(folder: Path, seconds: float) -> None:
    """Add the notebook's wall time and the machine to its ``timings.json`` (the README's time table)."""
    from ..provenance import cpu_model

    path = folder / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings.update(notebook_wall_s=round(seconds, 1), notebook_cpu=cpu_model(), notebook_cores=os.cpu_count())
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(path, timings)


def sweep_staging(executed: Path) -> None:
    """Remove staging folders left by runs that were killed (SIGKILL, SIGTERM): a folder's name carries the pid
    of the run that made it, and a live run's folder is left alone."""
    for d in executed.glob("staging-*"):
        m = re.match(r"staging-.+?-pid(\d+)-", d.name)
        if m is None or not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)


def run_notebook(nb: Path, out_nb: Path, params: dict, figures: Path, env: dict[str, str],
                 stamp: Path | None = None, inputs: str | None = None, upstream: str | None = None,
                 compute_tag: str = CPU.tag) -> None:
    """Execute ``nb`` in a staging folder of its own; on success move its figures into ``figures/<stem>``, its
    executed copy to ``out_nb`` and (given ``stamp``) record ``inputs``, where it computed (``compute_tag``) and
    the figures' hashes, all under a lock per output folder."""
    import papermill as pm

    out_nb.parent.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    # unique per run, beside out_nb (build/<mode>/executed: the same disk as figures/, outside it)
    staging = Path(tempfile.mkdtemp(prefix=f"staging-{nb.stem}-pid{os.getpid()}-", dir=out_nb.parent))
    staged_nb = staging / out_nb.name
    used_log = staging / "checkpoints-used.txt"
    env = {**env, "MEMLIB_FIGURES": str(staging / "figures"), "MEMLIB_UPSTREAM_FIGURES": str(figures),
           USE_LOG_ENV: str(used_log)}
    t0 = time.time()
    try:
        with _environ(env):
            # "immediate": on Ctrl-C the kernel is killed, not asked to shut down mid-cell (which it answers
            # with a traceback of its own)
            pm.execute_notebook(str(nb), str(staged_nb), parameters=params, kernel_name="python3",
                                cwd=str(repo_root()), progress_bar=False, shutdown_kernel="immediate")
        record_wall_time(staging / "figures" / nb.stem, time.time() - t0)
        with file_lock(out_nb.parent / f".lock-{nb.stem}"):
            _install(staging / "figures" / nb.stem, figures / nb.stem)
            os.replace(staged_nb, out_nb)
            for kind in ("failed", "interrupted"):  # an earlier partial run is stale now
                out_nb.with_name(f"{nb.stem}.{kind}.ipynb").unlink(missing_ok=True)
            if stamp is not None:
                stamp.parent.mkdir(parents=True, exist_ok=True)
                used = used_log.read_text().split("\n") if used_log.exists() else []
                checkpoints = Path(env["MEMLIB_CHECKPOINTS"]) if "MEMLIB_CHECKPOINTS" in env else None
                _write_json(stamp, {"inputs": inputs, "files": folder_files(figures / nb.stem), "upstream": upstream,
                                    "compute": compute_tag,
                                    "checkpoints": checkpoint_record(checkpoints, [u for u in used if u])
                                    if checkpoints else {}})
    except BaseException as e:  # keep the partial run to read, never under the name of the good one
        if staged_nb.exists():
            os.replace(staged_nb, out_nb.with_name(f"{nb.stem}.{'interrupted' if _is_interrupt(e) else 'failed'}"
                                                   f".ipynb"))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_compute(device: str | None = None, dtype: str | None = None) -> Compute:
    """Where the notebooks' networks will run: ``device`` / ``dtype`` as given, else the notebooks' defaults
    ('auto', 'fp32') resolved on this machine; SystemExit naming the value when it is refused, before any run."""
    try:
        return compute(device or "auto", dtype or "fp32")
    except ValueError as e:
        raise SystemExit(f"--device {device or 'auto'} --dtype {dtype or 'fp32'}: {e}") from None


def reproduce(quick: bool = False, only: list[str] | None = None, force: bool = False, device: str | None = None,
              dtype: str | None = None) -> list[Outcome]:
    root = repo_root()
    cx = run_compute(device, dtype)
    base = root / "build" / ("quick" if quick else "full")
    figures = base / "figures" if quick else root / "figures"
    checkpoints = base / "checkpoints" if quick else root / "checkpoints"
    nbs = notebooks(root)
    stems = [n.stem for n in nbs]
    if only is not None and not only:
        raise SystemExit(f"--only needs notebook names; choose from {stems}")
    unknown = sorted(set(only or []) - set(stems))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; choose from {stems}")
    for d in (base / "executed", base / "stamps", figures):
        d.mkdir(parents=True, exist_ok=True)
    sweep_staging(base / "executed")
    env = {"MEMLIB_CHECKPOINTS": str(checkpoints), "HF_HUB_DISABLE_TELEMETRY": "1",
           "TQDM_DISABLE": "1" if quick else os.environ.get("TQDM_DISABLE", "0"),
           "MEMLIB_QUICK": "1" if quick else "0"}
    params = {n.stem: (QUICK_PARAMS.get(n.stem, {}) if quick else {}) for n in nbs}
    hashes = input_hashes(root, nbs, params)   # where a run computes is the stamp's ``compute``, not an input
    given = {k: v for k, v in (("device", device), ("dtype", dtype)) if v}
    params = {stem: {**p, **given} for stem, p in params.items()}
    todo = [nb for nb in nbs if not only or nb.stem in only]
    outcomes: list[Outcome] = []
    failed_upstream = False
    for i, nb in enumerate(todo):
        stamp = base / "stamps" / f"{nb.stem}.json"
        upstream = upstream_metrics(figures, stems[:stems.index(nb.stem)])
        why = "forced" if force else stale_reason(stamp, hashes[nb.stem], figures / nb.stem, checkpoints, upstream,
                                                  cx.tag)
        if why is None:
            outcomes.append(Outcome(nb.stem, "skipped", detail="inputs unchanged, figures as stamped"))
            print(f"[skip] {nb.stem}: inputs unchanged, figures as stamped", flush=True)
            continue
        if failed_upstream:
            outcomes.append(Outcome(nb.stem, "failed", detail="not run: an upstream notebook failed"))
            continue
        print(f"[run ] {nb.stem} ({why}) ...", flush=True)
        t0 = time.time()
        try:
            run_notebook(nb, base / "executed" / nb.name, params[nb.stem], figures, env, stamp, hashes[nb.stem],
                         upstream, cx.tag)
        except (Exception, KeyboardInterrupt) as e:
            if _is_interrupt(e):  # Ctrl-C: the last good figures, executed copy and stamp stay as they were
                outcomes.append(Outcome(nb.stem, "interrupted", time.time() - t0,
                                        f"Ctrl-C; partial run in {nb.stem}.interrupted.ipynb"))
                outcomes += [Outcome(n.stem, "not run", detail="after Ctrl-C") for n in todo[i + 1:]]
                raise Interrupted(outcomes) from None
            outcomes.append(Outcome(nb.stem, "failed", time.time() - t0, _failing_cell(e)))
            print(f"[FAIL] {nb.stem}: {_failing_cell(e)} (see {base / 'executed' / (nb.stem + '.failed.ipynb')})",
                  flush=True)
            failed_upstream = True
            continue
        outcomes.append(Outcome(nb.stem, "ran", time.time() - t0, why))
        print(f"[ ok ] {nb.stem} in {time.time() - t0:.0f} s", flush=True)
    return outcomes


def summary(outcomes: list[Outcome], cx: Compute = CPU) -> str:
    lines = ["notebook            status       seconds  detail"]
    lines += [f"{o.notebook:<19} {o.status:<12} {o.seconds:7.0f}  {o.detail}" for o in outcomes]
    if not cx.is_reference and any(o.status == "ran" for o in outcomes):
        lines.append(f"\nNOTE: the notebooks that ran computed on {cx.device} in {cx.dtype_name}, not on the "
                     f"CPU in fp32: their values come from another device than the committed figures (the CPU "
                     f"reference). Compare them with `make compare-device RUN=<their figures folder>`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny parameters, outputs under build/quick")
    ap.add_argument("--only", nargs="*", help="notebook stems to run (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun even if inputs are unchanged")
    ap.add_argument("--device", default=None, help="every notebook's device parameter: auto, cpu, cuda, cuda:1, mps "
                    "(default: the notebooks' 'auto': cuda, then mps, then cpu)")
    ap.add_argument("--dtype", default=None, help="every notebook's dtype parameter: fp32 (default), or fp16 / bf16 "
                    "on a GPU")
    a = ap.parse_args(argv)
    cx = run_compute(a.device, a.dtype)
    # a shell starts background jobs with SIGINT ignored, and Python keeps it so: Ctrl-C (or a SIGINT sent to
    # the group) must still stop the run with its summary
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcomes = reproduce(a.quick, a.only, a.force, a.device, a.dtype)
    except Interrupted as e:
        print("\n" + summary(e.outcomes, cx))
        print("\ninterrupted: figures, stamps and executed notebooks of the last good runs are unchanged")
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted before any notebook ran; nothing changed")
        return 130
    print("\n" + summary(outcomes, cx))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
