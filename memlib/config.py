"""Validated configs built from a notebook's flat ``parameters`` cell.

Papermill silently injects any name it is given, so every notebook turns its parameters into one of these
dataclasses right after the parameters cell. Unknown names, wrong types and out-of-range values stop the run
at once with a message naming the parameter and what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from typing import Any, Literal, get_args, get_origin


MAX_SEED = 2**63 - 1   # seeds are checked against [0, MAX_SEED]: what numpy and torch both accept


class ConfigError(ValueError):
    """A bad parameter value; the message names the parameter and the allowed values."""


def _check_type(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"parameter {name!r} = {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(name, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"parameter {name!r} = {value!r} has the wrong type; expected {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"parameter {name!r} = {value!r} must be a list, got {type(value).__name__}")
        args = get_args(tp)
        item = args[0] if args else Any
        return type(value)(_check_type(f"{name}[{i}]", v, item) for i, v in enumerate(value)) if origin is list \
            else tuple(_check_type(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"parameter {name!r} = {value!r} must be a number, got {type(value).__name__}")
        _check_finite(name, value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"parameter {name!r} = {value!r} must be an integer, got {type(value).__name__}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"parameter {name!r} = {value!r} must be {tp.__name__}, got {type(value).__name__}")
    return value


def _check_finite(name: str, value: Any) -> None:
    # NaN compares False with everything, so without this it passes every range check and fails much later.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"parameter {name!r} = {value!r} is not a finite number; give a finite value")


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless lo <= value <= hi (bounds optional); NaN and infinities never pass."""
    _check_finite(name, value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ConfigError(f"parameter {name!r} = {value!r} is out of range; allowed {rng}")


def parse_number_list(name: str, text: str, kind=int, lo: float | None = None, distinct: bool = False) -> list:
    """A comma-separated parameter ('1,2', '' for none) as a list of ``kind``, each at least ``lo`` (``distinct``:
    no value twice, e.g. seeds, where a repeat would count one run twice)."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"parameter {name!r} = {text!r}: give a comma list of {kind.__name__} values such as "
                          f"'1,2', or '' for none") from None
    for v in values:
        check_range(name, v, lo)
    if distinct and len(set(values)) < len(values):
        raise ConfigError(f"parameter {name!r} = {text!r} repeats a value; list each once")
    return values


class Config:
    """Mixin for dataclass configs: type checks, ``validate()`` range checks, building from a namespace."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _check_type(f.name, getattr(self, f.name), hints[f.name])
            if (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int):
                # numpy refuses negative seeds; torch overflows past 64 bits (and memlib adds small offsets)
                check_range(f.name, value, 0, MAX_SEED)
            setattr(self, f.name, value)
        self.validate()

    def validate(self) -> None:  # overridden with range checks
        pass

    @classmethod
    def _nested(cls) -> dict[str, type]:
        """Fields holding another Config (e.g. ``testbed: TestbedRef``); their parameters are flat, prefixed
        with the field name (``testbed_seed``), so a notebook's parameters cell stays flat."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)
                if isinstance(hints[f.name], type) and issubclass(hints[f.name], Config)}

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every flat parameter name this config accepts."""
        nested = cls._nested()
        names = []
        for f in dataclasses.fields(cls):
            names += [f"{f.name}_{n}" for n in nested[f.name].parameter_names()] if f.name in nested else [f.name]
        return names

    @classmethod
    def from_params(cls, params: dict[str, Any], ignore: typing.Iterable[str] = ()):
        """Build from a dict of flat parameters; unknown names are an error (papermill would accept them)."""
        allowed = cls.parameter_names()
        unknown = sorted(set(params) - set(allowed) - set(ignore))
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; allowed: {sorted(allowed)}")
        nested = cls._nested()
        kwargs = {k: v for k, v in params.items() if k in allowed and not any(k.startswith(f"{n}_") for n in nested)}
        for name, sub in nested.items():
            given = {k[len(name) + 1:]: v for k, v in params.items() if k.startswith(f"{name}_") and k in allowed}
            try:
                kwargs[name] = sub.from_params(given)
            except ConfigError as e:  # name the flat parameter the user wrote
                raise ConfigError(re.sub(r"parameter '(\w+)", rf"parameter '{name}_\1", str(e))) from None
        return cls(**kwargs)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any], parameter_names: typing.Iterable[str]):
        """Build from a notebook's globals: ``parameter_names`` are the names the parameters cell and any
        papermill-injected cell assigned (see ``memlib.notebook_parameters.parameters_of``)."""
        return cls.from_params({k: namespace[k] for k in parameter_names})

    def to_dict(self) -> dict[str, Any]:
        """The values by flat parameter name (nested configs expanded with their prefix)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                out.update({f"{f.name}_{k}": x for k, x in v.to_dict().items()})
            else:
                out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        return out

    def digest(self) -> str:
        """Stable hash of the values, used as a cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
