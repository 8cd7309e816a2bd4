"""Method names -> methods. ``make_method(name, value)`` checks the name and the knob value with errors that
say what to do (no value: the knob's default, ``Knob.default_value``); ``sweep(name)`` gives a method at each of
its default knob values.

A methods module registers its methods with ``register`` when it is imported: ``mitigate.baselines`` and each paper
package's ``methods`` module. The registry imports none of them (they sit above it); ``memlib.api.methods`` imports
them all, and a paper's study imports the methods modules whose methods it runs.
"""
from __future__ import annotations

from typing import Any, Callable

from .method import Context, Knob, Method, Plan

_REGISTRY: dict[str, tuple[Knob, Callable[[Context, Any], Plan], str, str]] = {}
_SCOPE: dict[str, str] = {}   # 'any' model, or 'testbed' (needs the embedded testbed's training set)


def register(name: str, knob: Knob, build: Callable[[Context, Any], Plan], kind: str = "inference",
             description: str = "", scope: str = "any") -> None:
    """``scope``: 'any' text-to-image model, or 'testbed' when the method needs what only the embedded testbed
    provides through the registry (its training set, a retrained checkpoint)."""
    if kind not in ("inference", "training"):
        raise ValueError(f"kind {kind!r}: choose 'inference' or 'training'")
    if scope not in ("any", "testbed"):
        raise ValueError(f"scope {scope!r}: choose 'any' or 'testbed'")
    _REGISTRY[name] = (knob, build, kind, description)
    _SCOPE[name] = scope


def available() -> dict[str, Knob]:
    """{method name: its knob}, for the methods registered so far."""
    return {k: v[0] for k, v in sorted(_REGISTRY.items())}


def describe(name: str) -> dict:
    """A method's knob, the knob value it runs at when none is given (``default``), kind ('inference'/'training'),
    scope ('any'/'testbed') and description."""
    make_method(name)  # the unknown-name error
    knob, _, kind, desc = _REGISTRY[name]
    return {"knob": knob, "default": knob.default_value, "kind": kind, "scope": _SCOPE.get(name, "any"),
            "description": desc}


def make_method(name: str, value=None) -> Method:
    """The method ``name`` at knob ``value`` (None: the knob's default, the operating point its paper's notebook
    chose, or else the strongest value of its sweep)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise ValueError(f"unknown mitigation method {name!r}; registered: {known}. A paper's methods register when "
                         f"its methods module is imported (e.g. import memlib.amg.methods); memlib.api.methods "
                         f"registers every method")
    knob, build, kind, desc = _REGISTRY[name]
    value = knob.default_value if value is None else value
    return Method(name, knob, knob.check(name, value), build, kind, desc)


def sweep(name: str, values=None) -> list[Method]:
    """The method at each value of ``values`` (default: its knob's sweep)."""
    knob = available().get(name) if isinstance(name, str) else None
    if knob is None:
        make_method(name)  # raises the unknown-name error
    return [make_method(name, v) for v in (knob.sweep if values is None else values)]
