"""Where networks run: the device and precision named by a notebook's ``device`` and ``dtype`` parameters (or
the command line's ``--device`` / ``--dtype``), and batch sizes from a GPU's free memory.

Results must not depend on where a network ran beyond floating-point rounding: noises are drawn on the CPU with
seeded generators and then moved (``memlib.sampling``), training draws its batches on the CPU generator
(``memlib.train``), and every result comes back to the CPU (``to_host``) before a metric or a plot sees it. On
the CPU in fp32 every helper here is the identity, so CPU results stay bit-identical.

``dtype`` (fp16, bf16) is the precision of the denoisers' forward passes on a GPU, applied with autocast
(``Compute.autocast``); weights, optimizers and training stay fp32, so a half-precision run samples from the same
weights. Half precision on the CPU is refused (slow or missing kernels).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .config import ConfigError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
HALF = (torch.float16, torch.bfloat16)


def resolve_device(device: str | None) -> torch.device:
    """``device`` checked, or the best available (None, '' or 'auto'): cuda, then mps, then cpu."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch build sees no CUDA GPU (run `memlib doctor`); use cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: this machine has no Apple GPU (mps); use cpu")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``dtype`` checked against ``device``; None or 'auto' is fp16 on CUDA, else fp32."""
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of fp32, fp16, bf16")
    if DTYPES[dtype] != torch.float32 and device.type == "cpu":
        raise ValueError(f"dtype {dtype} on the CPU is refused (half-precision CPU kernels are slow or missing); "
                         "use fp32 on the CPU, or --device cuda")
    return DTYPES[dtype]


@dataclass(frozen=True)
class Compute:
    """A resolved device and the precision of forward passes there."""
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def dtype_name(self) -> str:
        return NAMES[self.dtype]

    @property
    def tag(self) -> str:
        """'cpu:fp32', 'cuda:fp16', ...: what a cache key holds, so one device never reads another's results."""
        return f"{self.device.type}:{self.dtype_name}"

    @property
    def is_reference(self) -> bool:
        """The CPU in fp32: where the committed figures were made."""
        return self.device.type == "cpu" and self.dtype == torch.float32

    def autocast(self):
        """Mixed precision for the forward passes in the block when ``dtype`` is half; a no-op in fp32."""
        return autocast(self.device, self.dtype)


CPU = Compute()


def autocast(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` on ``device`` in ``dtype``, or a no-op context for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def compute(device: str | None = "auto", dtype: str | None = "fp32") -> Compute:
    """The ``Compute`` a notebook's ``device`` and ``dtype`` name; ConfigError naming the parameter if refused
    (checked from the names alone: nothing loads)."""
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise ConfigError(f"parameter 'device' = {device!r}: {e}") from None
    try:
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        raise ConfigError(f"parameter 'dtype' = {dtype!r} with device {str(dev)!r}: {e}") from None
    return Compute(dev, dt)


class ComputeParams:
    """Mixin for a notebook config with ``device: str = "auto"`` and ``dtype: str = "fp32"`` fields (declared by
    the config itself, so its parameters keep their order)."""

    def check_compute(self) -> None:
        compute(self.device, self.dtype)   # raises ConfigError naming the parameter

    def compute(self) -> Compute:
        return compute(self.device, self.dtype)

    def backend_options(self) -> dict:
        """``memlib.backends.make_backend``'s ``device`` and ``precision`` keywords."""
        cx = self.compute()
        return {"device": cx.device, "precision": cx.dtype}


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s weights are (the CPU for a module without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_host(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the CPU, half precision widened to fp32 (metrics and plots run there); the identity for a CPU
    tensor in fp32 or fp64."""
    x = x.detach().cpu()
    return x.float() if x.dtype in HALF else x


def compute_tag(backend_or_module) -> str:
    """The ``Compute.tag`` of a backend (its ``device`` and ``precision``) or of a module (its weights' device
    and dtype), for cache keys."""
    if isinstance(backend_or_module, torch.nn.Module):
        p = next(backend_or_module.parameters(), None)
        dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
        return f"{dev.type}:{NAMES.get(dt, str(dt))}"
    dt = getattr(backend_or_module, "precision", torch.float32)
    return f"{backend_or_module.device.type}:{NAMES.get(dt, str(dt))}"


def batch_size(configured: int, per_item_bytes: int, device: torch.device | str, cap: int | None = None,
               share: float = 0.5) -> int:
    """Items per network call: on a CUDA GPU what ``share`` of its free memory holds at ``per_item_bytes`` each
    (``torch.cuda.mem_get_info``), clipped to [1, cap] (``cap`` defaults to ``configured``); elsewhere
    ``configured`` unchanged, so CPU runs batch exactly as configured."""
    device = torch.device(device)
    if device.type != "cuda":
        return configured
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * share) // max(1, int(per_item_bytes))
    return int(max(1, min(cap if cap is not None else configured, fits)))
