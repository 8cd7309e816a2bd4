"""Opening a user's model for the command line and the API: device, dtype, batch size and guidance defaults, and
an identity of the weights cheap enough to check on every resume.

``model`` is ``testbed`` (the shipped embedded testbed), ``tiny-sd`` (random weights; plumbing checks), a folder
written by ``save_pretrained`` (diffusers layout) or a hub id, loaded offline-first (``memlib.backends.hub``).
The testbed is loaded, never trained, here: its weights ship with the repository, and training them is the
explicit ``train_testbed`` (``memlib train-testbed``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from ..device import DTYPES, batch_size, resolve_device, resolve_dtype  # noqa: F401  (DTYPES: re-exported)

TEXT_MODELS_HINT = "give --model testbed, a Stable Diffusion folder written by save_pretrained, or a hub id"

_SHIPPED: dict = {}   # the testbed and tiny-sd, loaded once per process and device (their weights never change)
TRAIN_TESTBED_MINUTES = 40   # the default testbed's UNet and CLIP on 2 CPU cores


class TestbedNotTrainedError(CheckpointError):
    """The testbed's weights are not where memlib looks, and loading must not train them unasked."""
    __test__ = False  # not a pytest test class


def require_testbed(ref=None) -> None:
    """TestbedNotTrainedError, one line saying what to do, when ``ref``'s weights (default: the shipped testbed)
    are not in the checkpoints folder; checked from the files, before any model is built."""
    from ..paths import checkout_root, checkpoints_dir
    from ..testbed.build import TestbedRef

    missing = (ref or TestbedRef()).missing_weights()
    if not missing:
        return
    where = ("memlib is installed, not run from a checkout, and the weights ship with the repository" if
             checkout_root() is None and not os.environ.get("MEMLIB_CHECKPOINTS") else "not found there")
    raise TestbedNotTrainedError(
        f"the testbed's weights {missing[0].name} are not in {checkpoints_dir()} ({where}): set MEMLIB_ROOT to a "
        f"memlib checkout or MEMLIB_CHECKPOINTS to its checkpoints/ folder, or train them with `memlib "
        f"train-testbed` (about {TRAIN_TESTBED_MINUTES} min on 2 CPU cores)")


def train_testbed(progress: bool = True):
    """Train (or resume, or just load) the shipped testbed's weights into the checkpoints folder; the Testbed."""
    from ..testbed.build import TestbedRef
    return TestbedRef().load(progress=progress)


def model_note(model: str) -> str | None:
    """A line the user must see about ``model`` before trusting its numbers, if any."""
    if model == "tiny-sd":
        return ("model tiny-sd: a miniature Stable Diffusion with RANDOM weights (no download), for smoke tests "
                "of the install and the plumbing; its scores and images mean nothing")
    return None


def open_model(model: str, device: str | None = None, dtype: str | None = None, progress: bool = True):
    """The backend for ``model`` on ``device`` (see the module docstring); it must be text-conditional."""
    from ..backends import make_backend

    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model {model!r}: {TEXT_MODELS_HINT}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if model in ("testbed", "tiny-sd"):
        if dt != torch.float32:
            raise ValueError(f"--model {model} runs in fp32 only; drop --dtype")
        if (model, str(dev)) not in _SHIPPED:
            if model == "testbed":
                require_testbed()
            _SHIPPED[model, str(dev)] = make_backend(model, device=dev, progress=progress)
        backend = _SHIPPED[model, str(dev)]
    elif model in ("digits", "digits-class", "tiny-ddpm"):
        raise ValueError(f"model {model!r} has no text encoder, so there are no prompts to score; {TEXT_MODELS_HINT}")
    else:
        backend = make_backend(model, device=dev, dtype=dt)
    if getattr(backend, "tokenizer", None) is None or not hasattr(backend, "encode_prompts"):
        raise ValueError(f"model {model!r} is not text-conditional (no text encoder); {TEXT_MODELS_HINT}")
    return backend


def default_guidance(backend) -> float:
    """Stable Diffusion's usual 7.5; the testbed was trained for 3."""
    return 3.0 if getattr(backend, "testbed", None) is not None else 7.5


def default_batch_size(backend) -> int:
    """Images per model call: all of a small model's; on a GPU, what a quarter of the free memory holds at a
    rough, untested guess of 32 KB of activations per latent element (SD at 512 px: 0.5 GB per image)."""
    numel = 1
    for s in backend.sample_shape:
        numel *= s
    if backend.device.type == "cuda":
        return batch_size(64, numel * 32768, backend.device, share=0.25)
    return 256 if numel <= 4096 else 4


def model_identity(model: str, backend) -> str:
    """What the weights are, cheaply: the testbed's checkpoint hash, a folder's weight files (names, sizes,
    modification times), or the name (for a hub id the revision is not checked; tiny models are seeded)."""
    tb = getattr(backend, "testbed", None)
    if tb is not None:
        return f"testbed:{tb.meta.get('sha256', '')}"
    folder = Path(model).expanduser()
    if folder.is_dir():
        h = hashlib.sha256()
        for f in sorted(folder.rglob("*")):
            if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"folder:{folder.resolve()}:{h.hexdigest()[:16]}"
    return f"model:{model}"


def weights_dtype(backend) -> str:
    """The denoiser's parameter dtype, e.g. 'torch.float16' (part of what a resumed run must match)."""
    net = getattr(backend, "unet", None) or getattr(backend, "model", None)
    return str(next(net.parameters()).dtype) if net is not None else "unknown"
