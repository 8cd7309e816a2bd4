"""The interface every mitigation implements (Wen et al. 2024 Sec. 4, AMG, PRSS, IET-AGC+ all fit it).

A ``Method`` has a name and one strength knob with its value. ``apply(ctx)`` receives the backend, the prompts
and the generation settings, and returns a ``Plan``: what to pass to ``memlib.generation.generate`` (rewritten
prompts with the originals as noise keys, conditioning overrides, per-batch hooks, extra branches, another
guidance scale, or another backend for training-time methods), plus what the method itself cost before
sampling (seconds, model evaluations per image) and which prompts it acted on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..generation import GenerationConfig


@dataclass(frozen=True)
class Knob:
    """A method's strength knob: its name, the values a sweep uses by default, the valid range, and the value a
    method runs at when none is given (``default``: the operating point its paper's notebook chose on the
    development half; None: the strongest value of the sweep)."""
    name: str
    sweep: tuple                      # default sweep, weakest to strongest
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    none_value: Any = None            # the value at which the method does nothing (if any)
    default: float | int | None = None

    @property
    def default_value(self) -> float | int:
        """The value ``make_method`` uses when none is given."""
        return self.sweep[-1] if self.default is None else self.default

    def check(self, method: str, value) -> float | int:
        ok_type = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type) or not np.isfinite(value):
            kind = "an integer" if self.integer else "a finite number"
            raise ValueError(f"method {method!r}: knob {self.name!r} must be {kind}, got {value!r}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ValueError(f"method {method!r}: knob {self.name!r} = {value!r} is outside "
                             f"[{self.lo}, {self.hi}]")
        return int(value) if self.integer else float(value)


@dataclass
class Context:
    """What a method sees: the backend, the prompts (and their dev/test records), generation settings."""
    backend: Any
    prompts: list[str]
    gen_cfg: GenerationConfig
    progress: bool = False


@dataclass
class Plan:
    """How to generate under the method, and what the method cost on its own."""
    prompts: list[str]
    noise_keys: list[str] | None = None                   # original prompts: rewritten ones keep their noise
    cond_override: Mapping[int, torch.Tensor] | torch.Tensor | None = None
    extra_hooks: Callable | None = None                   # rows -> hooks (see generate)
    branches: Callable | None = None                      # rows -> {name: conditioning}
    gen_cfg: GenerationConfig | None = None               # e.g. another guidance scale
    backend: Any = None                                   # another model (training-time methods)
    acted: np.ndarray | None = None                       # (P,) did the method change prompt p's generation?
    prep_seconds: float = 0.0                             # before sampling (e.g. optimizing embeddings)
    prep_evals_per_image: float = 0.0                     # model evaluations per generated image before sampling
    info: dict[str, np.ndarray] = field(default_factory=dict)  # per-prompt extras (iterations, truncation, ...)


@dataclass
class Method:
    """A named mitigation at one knob value. ``build(ctx, value) -> Plan`` does the work."""
    name: str
    knob: Knob
    value: float | int
    build: Callable[[Context, Any], Plan]
    kind: str = "inference"           # 'inference' or 'training' (acts through another checkpoint)
    description: str = ""
    params: dict = field(default_factory=dict)   # settings beyond the knob (part of the cache key)

    def apply(self, ctx: Context) -> Plan:
        plan = self.build(ctx, self.value)
        if plan.acted is None:
            plan = replace(plan, acted=np.ones(len(ctx.prompts), dtype=bool))
        if len(plan.prompts) != len(ctx.prompts):
            raise ValueError(f"method {self.name!r} returned {len(plan.prompts)} prompts for {len(ctx.prompts)}")
        return plan

    @property
    def label(self) -> str:
        return f"{self.name}({self.knob.name}={self.value:g})"

    def key(self) -> dict:
        key = {"method": self.name, "knob": self.knob.name, "value": self.value}
        return dict(key, params=self.params) if self.params else key
