"""A small content-addressed cache for sweep points (numpy arrays), so interrupted sweeps resume.

Each entry is ``<name>-<hash of key>.npz`` plus a ``.sha256`` sidecar written after it. The key always includes
the hash of the memlib source (``code_fingerprint``), so a code change never reuses results of the old code;
callers put the weights' content hash (``weights_fingerprint``) in their key. A missing sidecar (interrupted
write) or a hash mismatch (corruption) is reported with a warning, the bad entry is kept aside under a unique
``.corrupt-*`` name, and the point recomputed. A lock per entry lets concurrent runs share work safely.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checkpoint import file_sha256
from .paths import cache_dir, code_dir
from .source_hash import source_fingerprint, tree_hash  # noqa: F401  (tree_hash: re-exported)


def key_digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def code_fingerprint() -> str:
    """Hash of the memlib source (every ``memlib/**/*.py``; $MEMLIB_CODE_DIR for tests) as it was when this
    process imported memlib (``memlib.source_hash``): results are keyed by the code that computes them, even if
    the files change while the process runs."""
    return source_fingerprint(str(code_dir()))


def _modules(obj) -> list[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.nn.Module):
        return [("module", obj)]
    # the weight-bearing parts of memlib's backends: testbed model, SD unet/vae/text_encoder, DDPM unet
    names = getattr(obj, "_parts", None) or ("model", "unet", "vae", "text_encoder")
    found = [(n, getattr(obj, n, None)) for n in names]
    found = [(n, m) for n, m in found if isinstance(m, torch.nn.Module)]
    if not found:
        raise TypeError(f"{type(obj).__name__} has no model weights to fingerprint (expected a torch module or a "
                        f"backend with .model / .unet / .vae / .text_encoder)")
    return found


def weights_fingerprint(backend_or_module) -> str:
    """SHA-256 of the weights' bytes (every state-dict tensor of every model part, with names, dtypes, shapes).

    Use it as the model part of a cache key: new weights in the same folder, or another seed of a random model,
    give another key, while the same weights loaded anywhere give the same key."""
    import torch

    h = hashlib.sha256()
    for part, module in _modules(backend_or_module):
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{part}.{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def keep_aside(path: Path, why: str) -> Path:
    """Rename a bad file to ``<name>.corrupt-<time>-<pid>[-n]`` (never delete: it is evidence), with a warning."""
    stem = f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    kept, n = path.with_name(stem), 1
    while kept.exists():
        kept, n = path.with_name(f"{stem}-{n}"), n + 1
    os.replace(path, kept)
    warnings.warn(f"{why}; kept it as {kept.name} and recomputing", stacklevel=3)
    return kept


@contextmanager
def file_lock(path: Path):
    """An exclusive ``flock`` on ``path`` (created if needed); released when the block ends or the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through a uniquely named temporary file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(name: str, key: Any, compute: Callable[[], dict[str, np.ndarray]],
                  folder: Path | None = None) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, reading them from the cache when this exact ``key`` was computed by this
    exact memlib code."""
    folder = Path(folder) if folder else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key_digest({'key': key, 'code': code_fingerprint()})}.npz"
    sidecar = path.with_suffix(".sha256")
    with file_lock(path.with_suffix(".lock")):  # a second run waits for this entry instead of racing on it
        if path.exists():
            if sidecar.exists() and sidecar.read_text().strip() == file_sha256(path):
                try:
                    with np.load(path, allow_pickle=False) as f:
                        return {k: f[k] for k in f.files}
                except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                    pass   # a file whose checksum was written for it but which is not an .npz: recompute
            keep_aside(path, f"cache entry {path.name} is corrupt or incomplete")
        out = compute()
        _atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in out.items()}))
        _atomic_write(sidecar, lambda f: f.write(file_sha256(path)), "w")
    return out
