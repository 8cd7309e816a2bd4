"""Helpers for notebooks: collect the parameters cell's names, so unknown papermill parameters are caught."""
from __future__ import annotations

import types
from typing import Any

_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def parameters_of(namespace: dict[str, Any]) -> dict[str, Any]:
    """The user-assigned plain values in a notebook's globals.

    Notebooks keep the ``parameters`` cell first and import nothing before building their config, so at that
    point every plain global is a parameter: the cell's own names plus any papermill injected (including
    misspelt ones, which the config then rejects).
    """
    out = {}
    for k, v in namespace.items():
        if k.startswith("_") or k in _IPYTHON_NAMES:
            continue
        if isinstance(v, (types.ModuleType, types.FunctionType, type)) or callable(v):
            continue
        out[k] = v
    return out
