"""The package's shape: no import cycles, the core never imports a paper package, small modules."""
import ast
from pathlib import Path

import memlib

PACKAGE = Path(memlib.__file__).parent
PAPERS = ("wen", "amg", "prss", "ietagc")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """memlib modules ``path`` imports anywhere in the file (function-level imports count: they cycle too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in targets if t and t.startswith("memlib")}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # importing a.b.c also runs a.b's __init__ (already running when a.b is this module's own package)
        deps = set()
        for t in _imports(path):
            while t and t not in files:
                t = t.rpartition(".")[0]
            parts = t.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(files)
        own = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        graph[name] = deps - own - {name, "memlib"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_finder_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# the harness, the mitigation harness and the user API sit above the papers: they may import them, the core may
# not; the package root and ``python -m memlib`` are the facade that exposes the API (lazily, for the root)
ABOVE_THE_CORE = PAPERS + ("harness", "mitigate", "api")
FACADE = ("memlib", "memlib.__main__")


def test_core_backends_and_testbed_import_no_paper_package():
    offenders = {}
    for name, deps in _graph().items():
        top = name.split(".")[1] if "." in name else ""
        if top in ABOVE_THE_CORE or name in FACADE:
            continue
        bad = {d for d in deps if d.split(".")[1] in ABOVE_THE_CORE}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, offenders


def test_no_module_over_400_lines():
    long = {_module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
