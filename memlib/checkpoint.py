"""Checkpoints: safetensors weights + a JSON sidecar holding the configs and the weights' SHA-256.

Writes go to a temporary folder that is renamed into place, so an interrupted save never leaves a half
checkpoint under the real name; loads verify the hash, so a truncated or corrupt file is detected.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt; the message says how to rebuild it."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(folder: str | Path, module: torch.nn.Module, meta: dict[str, Any],
                    extra_state: dict[str, Any] | None = None) -> Path:
    """Atomically write ``model.safetensors``, ``meta.json`` (+ hash) and optional ``train_state.pt``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    if extra_state is not None:
        torch.save(extra_state, tmp / "train_state.pt")
    meta = dict(meta, sha256=file_sha256(tmp / "model.safetensors"))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=list))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / "meta.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {folder} (meta.json missing); train it by running the notebook "
                              f"that makes it (e.g. notebooks/00_testbed.ipynb for the testbed)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata {path} is corrupt ({e})") from e


def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Return the metadata if the weights match their recorded hash, else raise CheckpointError."""
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"checkpoint {folder} has no model.safetensors")
    digest = file_sha256(weights)
    if digest != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {weights} is corrupt or truncated (sha256 {digest[:12]}… != recorded "
                              f"{str(meta.get('sha256'))[:12]}…); memlib's loaders set it aside and rebuild it")
    return meta


def load_weights(folder: str | Path, module: torch.nn.Module) -> dict[str, Any]:
    """Verify, then load weights into ``module`` (strict). Returns the metadata."""
    from safetensors.torch import load_file

    meta = verify_checkpoint(folder)
    state = load_file(str(Path(folder) / "model.safetensors"))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {folder} does not fit this model config ({str(e)[:300]}); "
                              f"it was made with {meta.get('model_config')}") from e
    return meta


def load_train_state(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / "train_state.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # a truncated optimizer state is rebuilt, not fatal
        raise CheckpointError(f"training state {path} is unreadable ({e}); delete it to restart training") from e


def set_aside(folder: str | Path, why: str) -> Path:
    """Move a bad checkpoint out of the way under a unique name (never deleted: it may be someone's only copy)."""
    folder = Path(folder)
    kept = folder.with_name(f"{folder.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(folder, kept)
    warnings.warn(f"{why}; kept it as {kept} and rebuilding {folder.name}", stacklevel=3)
    return kept


def load_or_build(folder: str | Path, module: torch.nn.Module, is_finished: Callable[[dict[str, Any]], bool],
                  build: Callable[[], Any], retrain: bool = False) -> tuple[dict[str, Any], Any]:
    """The one load-or-train policy for every checkpoint memlib makes.

    A finished checkpoint (``is_finished(meta)``) whose weights match their hash is loaded into ``module``.
    An unfinished one is left for ``build`` to resume. A corrupt one, or one made from other data, is set aside
    under a unique ``.corrupt-*`` name with a warning saying where, and rebuilt. ``retrain`` rebuilds from scratch.
    Returns (metadata, what ``build`` returned or None when loaded).
    """
    folder = Path(folder)
    if folder.exists() and retrain:
        shutil.rmtree(folder)
    elif folder.exists():
        try:
            meta = verify_checkpoint(folder)
            if is_finished(meta):
                load_weights(folder, module)
                return meta, None
        except CheckpointError as e:
            set_aside(folder, str(e))
    built = build()
    return verify_checkpoint(folder), built
