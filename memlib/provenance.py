"""Metrics files and tables with provenance.

``figures_name`` says where a run's results go: ``figures/<notebook>/`` for the reference run, else a folder of its
own under ``figures/runs/``; ``write_metrics``, ``write_table`` and ``plotting.save_figure`` take either name.

``write_metrics`` writes ``figures/<notebook>/metrics.json``: the measured numbers plus where they came from
(notebook, parameters, seeds, memlib version, git commit, checkpoint hashes, library versions, device).
Numbers are rounded to 6 significant digits and keys sorted, so a rerun with the same parameters on the same
machine writes a byte-identical file. Wall-clock timings go to ``timings.json`` beside it (never identical).
Writes go to a temporary file that is renamed into place, so a failed run never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .paths import figures_dir, repo_root

LIBRARIES = ("torch", "diffusers", "transformers", "open_clip_torch", "numpy", "scikit-learn", "safetensors")


def _round(x: Any) -> Any:
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.6g}")
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return [_round(v) for v in x.tolist()]
    if isinstance(x, dict):
        return {str(k): _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


def git_commit() -> str:
    try:
        root = repo_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "memlib"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_info() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.machine()}:{torch.get_num_threads()}threads"


def cpu_model() -> str:
    """The processor's name: float results can differ in the last digits between CPU models (vector units)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        return platform.processor() or "unknown"
    info = {k.strip(): v.strip() for k, v in info.items()}
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in info.get("flags", "").split()]
    return f"{info.get('model name', 'unknown')} ({', '.join(vector) or 'no avx2'})"


def compute_record(params: dict[str, Any]) -> dict[str, str]:
    """Where the networks of a run with these parameters ran: its ``device`` and ``dtype`` resolved ('auto' is
    what this machine picks); the CPU in fp32 for a run without them."""
    from .device import compute

    try:
        cx = compute(params.get("device", "cpu"), params.get("dtype", "fp32"))
    except ValueError:   # refused here (e.g. cuda on a machine without one): record what was asked
        return {"compute_device": str(params.get("device")), "compute_dtype": str(params.get("dtype"))}
    return {"compute_device": str(cx.device), "compute_dtype": cx.dtype_name}


def provenance(notebook: str, params: dict[str, Any], checkpoints: dict[str, str] | None = None) -> dict[str, Any]:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"notebook": notebook, "parameters": params, "seeds": {k: v for k, v in params.items() if "seed" in k},
            "memlib_version": __version__, "git_commit": git_commit(), "checkpoints": checkpoints or {},
            "libraries": versions, "python": platform.python_version(), "device": device_info(),
            "cpu": cpu_model(), **compute_record(params)}


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process: concurrent writers never collide
    tmp.write_text(text)
    os.replace(tmp, path)


def _writes_reference_figures() -> bool:
    """Whether figures go to the repository's ``figures/`` (not $MEMLIB_FIGURES elsewhere: make reproduce's
    staging folder, build/quick, tests)."""
    env = os.environ.get("MEMLIB_FIGURES")
    return not env or Path(env).resolve() == (repo_root() / "figures").resolve()


def figures_name(notebook: str, backend: str = "testbed", **non_default_params: Any) -> str:
    """Where a notebook's results go: ``notebook`` (``figures/<notebook>/``, the reference figures) for its default
    run on the testbed, else ``runs/<notebook>-<backend>-<digest>`` named after the backend and the non-default
    parameters, so a run on another model or other data never overwrites the reference figures.

    When $MEMLIB_FIGURES sends figures elsewhere (``make reproduce`` stages them and moves only its own default
    runs into figures/; ``--quick`` and tests write to build/ or temp folders) the plain name is used."""
    if (backend == "testbed" and not non_default_params) or not _writes_reference_figures():
        return notebook
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(backend).rstrip("/")).name or str(backend)).strip("-.")[:40]
    digest = hashlib.sha256(json.dumps([backend, non_default_params], sort_keys=True, default=str).encode())
    return f"runs/{notebook}-{label or 'model'}-{digest.hexdigest()[:8]}"


# parameters that do not make a result another run's: where the networks ran is recorded in the provenance
# (``compute_device``), and a GPU ``make reproduce`` regenerates the reference figures
NOT_A_RESULTS_PARAMETER = ("backend", "progress", "device", "dtype")


def non_default_params(cfg, ignore: tuple[str, ...] = NOT_A_RESULTS_PARAMETER) -> dict[str, Any]:
    """The flat parameters of a notebook config that differ from its defaults (``ignore``: not a result's)."""
    default = type(cfg)().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if k not in ignore and default.get(k) != v}


def figures_name_for(notebook: str, cfg) -> str:
    """``figures_name`` for a notebook config: its ``backend`` (if any) and every non-default parameter."""
    return figures_name(notebook, getattr(cfg, "backend", "testbed"), **non_default_params(cfg))


def write_metrics(notebook: str, metrics: dict[str, Any], params: dict[str, Any],
                  checkpoints: dict[str, str] | None = None, timings: dict[str, float] | None = None) -> Path:
    out = figures_dir(notebook)
    body = {"metrics": _round(metrics), "provenance": _round(provenance(notebook, params, checkpoints))}
    path = out / "metrics.json"
    atomic_write_text(path, json.dumps(body, indent=1, sort_keys=True) + "\n")
    if timings is not None:
        atomic_write_text(out / "timings.json", json.dumps(_round(timings), indent=1, sort_keys=True) + "\n")
    return path


def write_table(notebook: str, name: str, rows: list[dict[str, Any]]) -> Path:
    """Per-item results as CSV next to the figures (the rows behind a plot, for readers who want them)."""
    import csv
    import io

    if not rows:
        raise ValueError(f"no rows to write for {notebook}/{name}.csv")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _round(v) for k, v in r.items()} for r in rows)
    path = figures_dir(notebook) / f"{name}.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def read_metrics(notebook: str) -> dict[str, Any]:
    """An earlier notebook's metrics (under ``make reproduce`` the finished figures, not this run's staging)."""
    up = os.environ.get("MEMLIB_UPSTREAM_FIGURES")
    path = (Path(up) / notebook if up else figures_dir(notebook)) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `make reproduce` (or the notebook {notebook})")
    return json.loads(path.read_text())
