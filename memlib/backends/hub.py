"""Loading diffusers models without ever hanging offline: a local folder first, then the Hugging Face cache, then
the hub only if HF_HUB_OFFLINE is unset and a <= 3 s probe reaches it; otherwise ``ModelUnavailableError`` says
how to make the model available.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Callable

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelUnavailableError(RuntimeError):
    """A model id cannot be loaded here (not cached and the hub is not reachable, or an incomplete folder)."""

    def __init__(self, model_id: str, reason: str):
        self.model_id = model_id
        folder = ("folder written by `save_pretrained` (diffusers layout: unet/, scheduler/ and for SD vae/, "
                  "text_encoder/, tokenizer/)")
        if _HUB_ID.match(model_id) and not Path(model_id).expanduser().exists():
            fix = (f"To make it available offline, either (a) on a machine with network access run `hf download "
                   f"{model_id}` (older: `huggingface-cli download {model_id}`), copy its Hugging Face cache "
                   f"(~/.cache/huggingface) here and set HF_HOME to it; or (b) pass the path of a {folder}.")
        else:  # a local path: `hf download <path>` would be nonsense
            fix = (f"Pass the path of a complete {folder}, e.g. copy the model folder again or re-save it with "
                   f"`save_pretrained`; or pass a hub id such as CompVis/stable-diffusion-v1-4.")
        super().__init__(f"model {model_id!r} is not available: {reason}. {fix}")


def _unreadable_weights(folder: Path) -> list[str]:
    """The ``*.safetensors`` files under ``folder`` whose header or size is broken (e.g. a truncated copy)."""
    from safetensors import safe_open

    bad = []
    for f in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception as e:  # safetensors raises its own SafetensorError (not an OSError)
            bad.append(f"{f} ({e})")
    return bad


def _load_local(model_id: str, load: Callable[[str, bool], object], src: str, folder: Path | None = None):
    """``load(src, True)`` from ``folder`` (default: the model's HF cache snapshot); a weights file that cannot be
    read becomes a ModelUnavailableError naming the file."""
    try:
        return load(src, True)
    except OSError:
        raise
    except Exception as e:
        folder = folder or _cached_snapshot(model_id)
        bad = _unreadable_weights(folder) if folder else []
        if not bad:
            raise
        raise ModelUnavailableError(model_id, f"unreadable weights file(s), truncated or corrupt: {'; '.join(bad)}"
                                    ) from e


def _cached_snapshot(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        return None


def _offline_requested() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; tests and notebooks set it later, so read it now.
    from huggingface_hub import constants
    env = (os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(v in {"1", "ON", "YES", "TRUE"} for v in env)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub (or the HTTPS proxy) within ``timeout`` seconds? A thread bounds
    the wait (getaddrinfo ignores socket timeouts); huggingface_hub would retry a dead host for ~20 s per file."""
    from huggingface_hub import constants
    url = urllib.parse.urlparse(os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe():
        with contextlib.suppress(OSError):
            ok.append(socket.create_connection((host, port), timeout=timeout).close() is None)

    (th := threading.Thread(target=probe, daemon=True)).start()
    th.join(timeout)
    return bool(ok)


def load_offline_first(model_id: str, load: Callable[[str, bool], object], local_files_only: bool | None):
    """``load(source, local_files_only)`` from a folder, else from the HF cache, else (if allowed) the hub."""
    if (path := Path(model_id).expanduser()).is_dir():
        try:
            return _load_local(model_id, load, str(path), path)
        except OSError as e:  # a missing component file
            raise ModelUnavailableError(model_id, f"the folder is incomplete ({e})") from e
    if not _HUB_ID.match(model_id):
        raise ModelUnavailableError(model_id, "it is neither an existing folder nor a valid hub id")
    try:
        return _load_local(model_id, load, model_id)
    except OSError as e:
        cache_error = e
    why = ("local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1" if _offline_requested()
           else None if _hub_reachable() else "the hub cannot be reached (no network)")
    if why:
        raise ModelUnavailableError(model_id, f"it is not in the local Hugging Face cache and {why}") from cache_error
    try:
        return load(model_id, False)
    except OSError as e:
        raise ModelUnavailableError(model_id, f"loading from the hub failed ({e})") from e


def model_kind(src: str, local: bool) -> str:
    if Path(src).is_dir():
        return "sd" if (Path(src) / "text_encoder").is_dir() else "ddpm"
    from huggingface_hub import hf_hub_download
    index = json.loads(Path(hf_hub_download(src, "model_index.json", local_files_only=local)).read_text())
    return "sd" if "text_encoder" in index else "ddpm"
