"""Collect a notebook's parameters, so unknown papermill parameters are caught by the config.

Under IPython the parameters are the names assigned by cells made only of ``name = literal`` lines: the
``parameters`` cell and the cell papermill injects after it (misspelt names included, which the config then
rejects; ``float('nan')`` and ``float('inf')``, papermill's spelling of non-finite floats, count as literals).
Other cells (imports, results) never count, so re-running the config cell in a live kernel works.
Outside IPython (tests) every plain literal value of the namespace counts.
"""
from __future__ import annotations

import ast
from typing import Any

_PLAIN = (int, float, str, bool, type(None), list, tuple, dict)


class _FloatCalls(ast.NodeTransformer):
    """Papermill writes non-finite floats as ``float('nan')`` / ``float('inf')``: read those calls as literals,
    or one NaN would hide every (possibly misspelt) name of the injected cell from the unknown-name check."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if isinstance(node.func, ast.Name) and node.func.id == "float" and isinstance(arg, ast.Constant) \
                and isinstance(arg.value, str):
            try:
                return ast.Constant(float(arg.value))
            except ValueError:
                pass
        return node


def _literal_assignments(source: str) -> list[str] | None:
    """Names assigned if ``source`` is only ``name = literal`` statements, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)):
            return None
        try:
            ast.literal_eval(_FloatCalls().visit(node.value))
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
        names += [t.id for t in node.targets]
    return names or None


def parameters_of(namespace: dict[str, Any]) -> dict[str, Any]:
    cells = namespace.get("In")
    if isinstance(cells, list) and any(cells):
        names: list[str] = []
        for src in cells:
            names += _literal_assignments(src) or []
        return {k: namespace[k] for k in dict.fromkeys(names) if k in namespace}
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in ("In", "Out") and isinstance(v, _PLAIN)}


def config_from_notebook(cls, namespace: dict[str, Any]):
    """``cfg = config_from_notebook(MyConfig, globals())`` in the cell after ``parameters``."""
    return cls.from_params(parameters_of(namespace))
