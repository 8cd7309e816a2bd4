"""A small content-addressed cache for sweep points (numpy arrays), so interrupted sweeps resume.

Each entry is ``<name>-<hash of key>.npz`` plus a ``.sha256`` sidecar written after it; a missing sidecar
(interrupted write) or a hash mismatch (corruption) is reported with a warning and the point recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..checkpoint import file_sha256
from ..paths import cache_dir


def key_digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_arrays(name: str, key: Any, compute: Callable[[], dict[str, np.ndarray]],
                  folder: Path | None = None) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, reading them from the cache when this exact ``key`` was computed."""
    folder = Path(folder) if folder else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key_digest(key)}.npz"
    sidecar = path.with_suffix(".sha256")
    if path.exists():
        if sidecar.exists() and sidecar.read_text().strip() == file_sha256(path):
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        warnings.warn(f"cache entry {path.name} is corrupt or incomplete; recomputing it", stacklevel=2)
        path.unlink()
    out = compute()
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in out.items()})
    os.replace(tmp, path)
    sidecar.write_text(file_sha256(path))
    return out
