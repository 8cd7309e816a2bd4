"""Backends: one ``Backend`` interface (``base``) over the embedded testbed, the digits DDPMs and real models, and
``make_backend``, the one place a backend is chosen from its name.

| name | backend |
|---|---|
| ``testbed`` | the shipped text-to-image testbed named by a ``TestbedRef`` (trained if missing) |
| ``digits``, ``digits-class`` | the digits DDPM, unconditional or class-conditional (``memlib.testbed.digits``) |
| ``tiny-sd``, ``tiny-ddpm`` | random-weight miniatures of Stable Diffusion / a pixel DDPM (plumbing checks) |
| a hub id or a folder | Stable Diffusion when it has a text encoder, else a pixel DDPM (offline-first) |
"""
from __future__ import annotations

from .base import Backend

SPECIAL = ("testbed", "digits", "digits-class", "tiny-sd", "tiny-ddpm")


def make_backend(name: str, testbed=None, device="cpu", seed: int = 0, progress: bool = True, precision=None,
                 **kw) -> Backend:
    """The backend called ``name`` (see the module docstring). ``testbed``: a ``memlib.testbed.build.TestbedRef``
    (default: the shipped testbed); ``seed``: the random weights of the tiny models; ``precision``: a torch dtype,
    the forward passes' precision (the embedded models autocast their fp32 weights; a real model loads its
    weights in it); ``kw`` go to a real model's ``from_pretrained`` (``dtype``, ``local_files_only``,
    ``revision``)."""
    import torch

    half = precision is not None and precision != torch.float32
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"backend name {name!r}: give 'testbed', 'tiny-sd', a model id or a local folder")
    if name == "testbed":
        from ..testbed.build import TestbedRef
        from .testbed import TestbedBackend

        ref = testbed or TestbedRef()
        tb = ref.load(progress=progress)
        tb.model.to(device)
        backend = TestbedBackend(tb.model, tb, precision or torch.float32)
        backend.ref = ref   # what training-time methods retrain from
        return backend
    if name in ("digits", "digits-class"):
        from ..testbed.digits import load_digits_model
        from .testbed import DigitsBackend

        unet, n_classes, meta = load_digits_model(class_conditional=name == "digits-class", progress=progress)
        return DigitsBackend(unet.to(device), n_classes, name, meta, precision or torch.float32)
    if name == "tiny-sd":
        from .stable_diffusion import StableDiffusionBackend
        return StableDiffusionBackend.tiny_random(seed=seed).to(device)
    if name == "tiny-ddpm":
        from .ddpm import DDPMBackend
        return DDPMBackend.tiny_random(seed=seed).to(device)
    if half:
        kw.setdefault("dtype", precision)
    return load_backend(name, device=device, **kw)


def load_backend(name_or_id: str, kind: str | None = None, **kw):
    """A ``StableDiffusionBackend`` or ``DDPMBackend`` for a folder or hub id (keywords go to ``from_pretrained``);
    ``kind`` = 'sd' | 'ddpm' skips detection (a text_encoder in the folder / model_index.json means SD)."""
    from .ddpm import DDPMBackend
    from .hub import load_offline_first, model_kind
    from .stable_diffusion import StableDiffusionBackend

    if name_or_id in SPECIAL:
        raise ValueError(f"{name_or_id!r} is built by memlib.backends.make_backend, not loaded from a folder or hub")
    kind = kind or load_offline_first(str(name_or_id), model_kind, kw.get("local_files_only"))
    classes = {"sd": StableDiffusionBackend, "stable-diffusion": StableDiffusionBackend, "ddpm": DDPMBackend}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}; choose 'sd' or 'ddpm'")
    return classes[kind].from_pretrained(name_or_id, **kw)
