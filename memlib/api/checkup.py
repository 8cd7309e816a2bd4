"""``memlib doctor``: is this install ready? Versions, device, the shipped testbed, cached models, the hub.

Each check is (name, status, detail) with status 'ok', 'note' (fine, but worth knowing) or 'FAIL' (something
the user must fix); the command exits non-zero when any check fails. The hub check never hangs: HF_HUB_OFFLINE
is reported without touching the network, otherwise one TCP probe of at most 3 s (``memlib.backends.hub``).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from dataclasses import dataclass

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "huggingface_hub",
            "safetensors", "scikit-learn", "numpy", "papermill", "ipywidgets", "jupyterlab")


@dataclass
class Check:
    name: str
    status: str      # 'ok' | 'note' | 'FAIL'
    detail: str


def _versions() -> list[Check]:
    import memlib
    from ..paths import checkout_root, checkpoints_dir

    root = checkout_root()
    where = f"checkout {root}" if root is not None else "installed; outputs under $MEMLIB_HOME or the user data folder"
    out = [Check("python", "ok", f"{platform.python_version()} ({sys.executable})"),
           Check("memlib", "ok", f"{memlib.__version__} at {os.path.dirname(memlib.__file__)}; {where}"),
           Check("checkpoints", "ok", str(checkpoints_dir()))]
    for p in PACKAGES:
        try:
            out.append(Check(p, "ok", md.version(p)))
        except md.PackageNotFoundError:
            out.append(Check(p, "FAIL", "not installed: run `make install` in a checkout, or `pip install memlib` "
                             "from a wheel (docs/install.md)"))
    return out


def _device() -> list[Check]:
    import torch
    out = [Check("cpu threads", "ok", f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append(Check(f"cuda:{i}", "ok", f"{torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of "
                             f"{total / 2**30:.1f} GiB free; --device cuda --dtype fp16 for Stable Diffusion"))
    else:
        built = torch.version.cuda
        out.append(Check("gpu", "note", f"no CUDA GPU visible (torch built for CUDA {built})" if built else
                         "no CUDA GPU (CPU-only torch): the testbed runs fine; Stable Diffusion will be slow"))
    return out


def _testbed() -> list[Check]:
    """The shipped checkpoint's files and hash, without loading or creating anything. Installed from a wheel,
    a missing testbed is a note (it ships with the repository; other models work); in a checkout it fails."""
    import json

    from ..checkpoint import file_sha256
    from ..paths import checkout_root
    from ..testbed.build import TestbedRef, checkpoint_folder
    from .model_setup import TestbedNotTrainedError, require_testbed

    ref = TestbedRef()
    folder = checkpoint_folder(ref.data_config(), ref.model_config(), ref.train_config())
    try:
        require_testbed(ref)
    except TestbedNotTrainedError as e:
        installed = checkout_root() is None and not os.environ.get("MEMLIB_CHECKPOINTS")
        return [Check("testbed", "note" if installed else "FAIL",
                      f"{e}; --model tiny-sd and your own models work without it" if installed else
                      f"{e}; in a checkout, `git checkout -- checkpoints` restores the shipped ones")]
    weights, meta = folder / "model.safetensors", folder / "meta.json"
    want = json.loads(meta.read_text()).get("sha256")
    if want and file_sha256(weights) != want:
        return [Check("testbed", "FAIL", f"{weights} does not match its recorded sha256 (corrupt copy): restore it "
                      "with `git checkout -- checkpoints`")]
    return [Check("testbed", "ok", f"{folder}: weights verified (sha256 {want[:12] if want else '?'}); try "
                  "`memlib detect --model testbed --demo`")]


def _cached_models() -> list[Check]:
    try:
        from huggingface_hub import scan_cache_dir
        info = scan_cache_dir()
    except Exception as e:   # no cache folder yet is the common case
        return [Check("hub cache", "note", f"no Hugging Face cache ({type(e).__name__}); models load from folders")]
    models = sorted(r.repo_id for r in info.repos if r.repo_type == "model")
    pipelines = [r for r in models if any("model_index.json" in f.file_name for rev in next(
        x for x in info.repos if x.repo_id == r).revisions for f in rev.files)]
    detail = (f"{len(pipelines)} diffusers pipeline(s) cached: {', '.join(pipelines)}" if pipelines else
              f"no diffusers pipeline cached ({len(models)} other model repos)")
    return [Check("hub cache", "ok" if pipelines else "note", detail)]


def _hub() -> list[Check]:
    from ..backends.hub import _hub_reachable, _offline_requested
    from huggingface_hub import constants

    if _offline_requested():
        return [Check("hub", "note", "offline (HF_HUB_OFFLINE=1): models load from folders and the cache only; "
                      "the network was not tried")]
    if _hub_reachable():
        return [Check("hub", "ok", f"{constants.ENDPOINT} reachable: hub ids download on first use")]
    return [Check("hub", "note", f"offline: {constants.ENDPOINT} cannot be reached within 3 s; models load from "
                  "folders and the cache only (set HF_HUB_OFFLINE=1 to skip this probe)")]


def doctor() -> list[Check]:
    """Every check, in order; none raises."""
    out = _versions()
    for part in (_device, _testbed, _cached_models, _hub):
        try:
            out += part()
        except Exception as e:  # a doctor that crashes helps nobody: report and go on
            out.append(Check(part.__name__.strip("_"), "FAIL", f"{type(e).__name__}: {e}"))
    return out


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{c.status:4}  {c.name:<{width}}  {c.detail}" for c in checks)
