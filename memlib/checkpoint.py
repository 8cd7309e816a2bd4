"""Checkpoints: safetensors weights + a JSON sidecar holding the configs and the weights' SHA-256.

Writes go to a temporary folder private to the writing process (``<name>.tmp-<host>-<pid>-<random>``) that is
renamed into place, so an interrupted save never leaves a half checkpoint under the real name, and several
processes (torchrun ranks writing shard checkpoints into one run folder, or two runs of the same checkpoint)
never write into each other's temporary files; loads verify the hash, so a truncated or corrupt file is detected.

A checkpoint may hold one part of a model only (``part="unet"``): a fine-tuned testbed then does not store its
frozen text encoder again, and ``load_weights`` puts the weights back into that part. Extra tensors meant to
ship with the weights (a per-timestep loss bank, per-sample skip counts; IET-AGC, Liu et al. 2024) go to
``loss_state.safetensors``, hashed like the weights.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
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


def _private_name(folder: Path, kind: str) -> Path:
    # host + pid say whose it is (for the sweep below); the random part keeps two saves of one process apart
    host = socket.gethostname().replace("-", "_")
    return folder.with_name(f"{folder.name}.{kind}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _sweep_leftovers(folder: Path) -> None:
    """Remove temporary folders that crashed writers on this host left behind. A leftover ``.old-*`` is kept
    when the checkpoint itself is missing: it may be the only copy (the writer died between its two renames)."""
    host = socket.gethostname().replace("-", "_")
    for p in folder.parent.glob(f"{folder.name}.*-{host}-*-*"):
        kind, _, rest = p.name[len(folder.name) + 1:].partition("-")
        pid = rest[len(host) + 1:].split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not folder.exists():
            continue
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(folder: str | Path, module: torch.nn.Module, meta: dict[str, Any],
                    extra_state: dict[str, Any] | None = None, *, part: str | None = None,
                    loss_state: dict[str, torch.Tensor] | None = None,
                    json_files: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Atomically write ``model.safetensors``, ``meta.json`` (+ hash) and optional ``train_state.pt``.

    ``part``: store only ``module.get_submodule(part)`` (recorded as meta["part"]). ``loss_state``: tensors that
    ship beside the weights (``loss_state.safetensors``, hash in meta). ``json_files``: small sidecars written
    in the same atomic rename (e.g. ``{"history.json": [...]}``). ``dtype``: store floating-point weights in this
    type (recorded as meta["stored_dtype"]; loading casts back to the module's own type).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(folder)
    tmp = _private_name(folder, "tmp")
    tmp.mkdir()
    try:
        src = module.get_submodule(part) if part else module
        state = {k: v.detach().contiguous().cpu() for k, v in src.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            meta = dict(meta, stored_dtype=str(dtype).removeprefix("torch."))
        save_file(state, str(tmp / "model.safetensors"))
        meta = dict(meta, sha256=file_sha256(tmp / "model.safetensors"))
        if part:
            meta["part"] = part
        if loss_state is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in loss_state.items()},
                      str(tmp / "loss_state.safetensors"))
            meta["loss_state_sha256"] = file_sha256(tmp / "loss_state.safetensors")
        if extra_state is not None:
            torch.save(extra_state, tmp / "train_state.pt")
        for name, value in (json_files or {}).items():
            (tmp / name).write_text(json.dumps(value))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=list))
        _swap_into_place(tmp, folder)
        note_use(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing checkpoint is first moved to a private ``.old-*`` name. If
    another writer of the same checkpoint gets in between, its copy is moved aside too (the last save wins)."""
    olds = []
    for _ in range(100):
        if folder.exists():
            old = _private_name(folder, "old")
            try:
                os.replace(folder, old)
                olds.append(old)
            except FileNotFoundError:  # another writer moved it first
                pass
        try:
            os.replace(tmp, folder)
            break
        except OSError as e:  # ENOTEMPTY/EEXIST: another writer renamed its copy in first; retry
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            time.sleep(0.01)
    else:
        raise CheckpointError(f"could not rename {tmp} to {folder}: other processes keep writing it")
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


USE_LOG_ENV = "MEMLIB_CHECKPOINT_LOG"


def note_use(folder: str | Path) -> None:
    """Append ``folder`` to the file named by $MEMLIB_CHECKPOINT_LOG, if set: ``reproduce`` records which
    checkpoints each notebook read or wrote, so that a notebook's inputs are the checkpoints it uses."""
    log = os.environ.get(USE_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(str(Path(folder).resolve()) + "\n")


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    note_use(folder)
    path = folder / "meta.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {folder} (meta.json missing); train it by running the notebook "
                              f"that makes it (e.g. notebooks/00_testbed.ipynb for the testbed)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata {path} is corrupt ({e})") from e


def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Return the metadata if the weights (and a shipped loss state) match their recorded hashes, else raise
    CheckpointError."""
    folder = Path(folder)
    meta = read_meta(folder)
    hashed = {"model.safetensors": "sha256"}
    if "loss_state_sha256" in meta:
        hashed["loss_state.safetensors"] = "loss_state_sha256"
    for name, key in hashed.items():
        path = folder / name
        if not path.exists():
            raise CheckpointError(f"checkpoint {folder} has no {name}")
        digest = file_sha256(path)
        if digest != meta.get(key):
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated (sha256 {digest[:12]}… != recorded "
                                  f"{str(meta.get(key))[:12]}…); memlib's loaders set it aside and rebuild it")
    return meta


def load_weights(folder: str | Path, module: torch.nn.Module) -> dict[str, Any]:
    """Verify, then load weights into ``module`` (strict). A checkpoint of one part (meta["part"], e.g. 'unet')
    loads into that submodule of ``module``, or into ``module`` itself when it is that part. Returns the metadata."""
    from safetensors.torch import load_file

    meta = verify_checkpoint(folder)
    state = load_file(str(Path(folder) / "model.safetensors"))
    part = meta.get("part")
    target = module
    if part:
        try:
            target = module.get_submodule(part)
        except AttributeError:  # the caller passed the part itself
            pass
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {folder} does not fit this model config ({str(e)[:300]}); "
                              f"it was made with {meta.get('model_config')}") from e
    return meta


def load_loss_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors shipped beside the weights (``loss_state.safetensors``), hash-verified; {} if there are none."""
    from safetensors.torch import load_file

    meta = verify_checkpoint(folder)
    if "loss_state_sha256" not in meta:
        return {}
    return load_file(str(Path(folder) / "loss_state.safetensors"))


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
    kept = folder.with_name(f"{folder.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                            f"-{uuid.uuid4().hex[:6]}")
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

