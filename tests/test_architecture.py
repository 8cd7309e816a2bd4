"""The package's layers: a module imports only its own tier or lower, by statement or by string; no import cycles;
small modules. The checks take a package root, so the self-tests run them on small fake trees too."""
import ast
import importlib.util
from pathlib import Path

import pytest

import memlib

PACKAGE = Path(memlib.__file__).parent

# Lowest first; "core" is the top-level modules of the package. backends and testbed share a tier: the testbed
# backend wraps the testbed model (backends.testbed -> testbed.model) and the testbed's evaluation generates
# through that backend (testbed.evaluate -> backends.testbed); the cycle test keeps the two out of a loop. Paper
# packages may import one another (a study runs a sibling paper's methods), again without a cycle.
TIERS = {"core": 0, "backends": 1, "testbed": 1, "mitigate": 2, "wen": 3, "amg": 3, "prss": 3, "ietagc": 3,
         "api": 4, "harness": 4}
# the package root (which loads the API lazily) and ``python -m <package>``: above everything, imported by nothing
FACADE = ("__init__", "__main__")
FACADE_RANK = max(TIERS.values()) + 1
DYNAMIC_IMPORTS = ("import_module", "__import__", "find_spec")
COMPUTED = "<computed name>"


def modules(package: Path) -> dict[str, Path | None]:
    """{dotted name: file} for every module under ``package``; a folder is a package whether or not it has an
    ``__init__.py`` (None then), so importing a folder is an edge too."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        for i in range(1, len(parts)):
            out.setdefault(".".join(parts[:i]), None)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _string(node, package: str, module: str) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("__package__", "__name__"):
        return package if node.id == "__package__" else module
    return None


def _dynamic_target(call: ast.Call, package: str, module: str) -> str | None:
    """The module an ``import_module`` / ``__import__`` / ``find_spec`` call names, resolved; COMPUTED when the
    name is not a constant string; None for any other call."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in DYNAMIC_IMPORTS or not call.args:
        return None
    name = _string(call.args[0], package, module)
    if name is None:
        return COMPUTED
    keywords = {k.arg: k.value for k in call.keywords}
    if called == "__import__":     # __import__(name, globals, locals, fromlist, level): relative to the caller
        level = call.args[4] if len(call.args) > 4 else keywords.get("level")
        if isinstance(level, ast.Constant) and isinstance(level.value, int) and level.value > 0:
            name = "." * level.value + name
        anchor = package
    else:                          # import_module(name, package) and find_spec(name, package)
        given = call.args[1] if len(call.args) > 1 else keywords.get("package")
        anchor = _string(given, package, module) if given is not None else None
    if not name.startswith("."):
        return name
    try:
        return importlib.util.resolve_name(name, anchor) if anchor else COMPUTED
    except (ImportError, ValueError):
        return COMPUTED


def imports(path: Path, module: str) -> tuple[set[str], list[int]]:
    """(modules of the package ``path`` imports anywhere in the file, by statement or by a dynamic import with a
    constant name; lines of dynamic imports whose name is computed, which no test can follow)."""
    root = module.split(".")[0]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out, computed = set(), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                    else node.module
            except ImportError as e:
                raise ImportError(f"{path}:{node.lineno}: {e}") from None
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node, package, module)):
            if target == COMPUTED:
                computed.append(node.lineno)
                continue
            targets = [target]
        else:
            continue
        out |= {t for t in targets if t == root or t.startswith(root + ".")}
    return out, computed


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}; importing a.b.c also runs a and a.b."""
    files = modules(package)
    root = package.name
    graph = {}
    for name, path in files.items():
        deps = set()
        for t in imports(path, name)[0] if path else ():
            while t not in files:
                t = t.rpartition(".")[0]
            parts = t.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        own = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        graph[name] = deps - own - {name, root}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
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


def tier(module: str, files: dict[str, Path | None]) -> str:
    """'facade', 'core' (a top-level module) or the name of the subpackage ``module`` is in."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in FACADE:
        return "facade"
    top = files.get(".".join(parts[:2]))
    return parts[1] if top is None or top.name == "__init__.py" else "core"


def _rank(name: str) -> int | None:
    return FACADE_RANK if name == "facade" else TIERS.get(name)


def layer_violations(package: Path) -> dict[str, list[str]]:
    """{'module (tier)': ['what it imports from a higher tier (tier)', ...]}; a subpackage in no tier is one too."""
    files = modules(package)
    out = {}
    for name, deps in import_graph(package).items():
        own = tier(name, files)
        if own == "facade":
            continue
        if _rank(own) is None:
            out[f"{name} ({own})"] = [f"the folder {own!r} is in no tier: add it to TIERS"]
            continue
        bad = sorted(f"{d} ({t})" for d in deps if (r := _rank(t := tier(d, files))) is None or r > _rank(own))
        if bad:
            out[f"{name} ({own})"] = bad
    return out


def computed_imports(package: Path) -> dict[str, list[int]]:
    """{file: lines} of dynamic imports whose module name is not a constant string, below the top tier (the top
    tier and the facade may load modules by a computed name: nothing they could reach sits above them)."""
    files = modules(package)
    top = max(TIERS.values())
    out = {}
    for name, path in files.items():
        rank = _rank(tier(name, files))
        if path and (rank is None or rank < top) and (lines := imports(path, name)[1]):
            out[str(path.relative_to(package.parent))] = lines
    return out


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_only_its_own_tier_or_lower():
    bad = layer_violations(PACKAGE)
    assert not bad, "imports from a higher tier:\n" + "\n".join(f"{m} -> {', '.join(d)}" for m, d in bad.items())


def test_dynamic_imports_name_their_module_as_a_constant_string():
    bad = computed_imports(PACKAGE)
    assert not bad, f"name the module as a constant string, so the layer test sees the import: {bad}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


# --- the checks can fail: small trees with the same layout as the package ---

def fake_package(tmp_path: Path, sources: dict[str, str] | None = None) -> Path:
    """A package 'fake' with a core module, backends and testbed, the mitigation harness, two papers (wen without
    an ``__init__.py``), the API and a facade; ``sources`` adds or replaces files."""
    files = {"__init__.py": "def __getattr__(name):\n    from . import api\n    return getattr(api, name)\n",
             "__main__.py": "from .api.cli import main\n",
             "metrics.py": "def roc():\n    pass\n",
             "backends/__init__.py": "", "backends/testbed.py": "from ..testbed.model import Model\n",
             "testbed/__init__.py": "", "testbed/model.py": "Model = object\n",
             "testbed/evaluate.py": "from ..backends.testbed import Model\n",
             "mitigate/__init__.py": "", "mitigate/registry.py": "def register(name):\n    pass\n",
             "mitigate/run.py": "from ..metrics import roc\n",
             "wen/scores.py": "from ..metrics import roc\n",
             "amg/__init__.py": "", "amg/methods.py": "from ..mitigate.registry import register\n",
             "amg/study.py": "from ..wen import scores\nfrom .methods import register\n",
             "api/__init__.py": "", "api/cli.py": "from ..amg import methods\n\ndef main():\n    pass\n"}
    files |= sources or {}
    root = tmp_path / "fake"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_well_layered_tree_passes(tmp_path):
    root = fake_package(tmp_path)
    assert layer_violations(root) == {} and find_cycle(import_graph(root)) is None and computed_imports(root) == {}


UPWARD = ["from .wen import scores",
          "from . import wen",                                    # a folder without __init__.py
          "def later():\n    import fake.wen.scores",
          "import importlib\nimportlib.import_module('fake.amg.methods')",
          "from importlib import import_module\nimport_module('.amg.methods', package='fake')",
          "from importlib import import_module\nimport_module('.amg', package=__package__)",
          "__import__('fake.amg.methods')",
          "mod = __import__('wen.scores', globals(), locals(), ['x'], 1)",
          "import importlib.util\nimportlib.util.find_spec('fake.wen.scores')"]


@pytest.mark.parametrize("source", UPWARD)
def test_an_upward_import_from_the_core_fails(tmp_path, source):
    bad = layer_violations(fake_package(tmp_path, {"metrics.py": source + "\n"}))
    assert list(bad) == ["fake.metrics (core)"], bad
    assert all(" (wen)" in d or " (amg)" in d for d in bad["fake.metrics (core)"]), bad


def test_a_string_import_of_a_paper_from_the_mitigation_harness_fails(tmp_path):
    registry = "import importlib\n\ndef load():\n    importlib.import_module('fake.amg.methods')\n"
    root = fake_package(tmp_path, {"mitigate/registry.py": registry})
    assert layer_violations(root) == {"fake.mitigate.registry (mitigate)": ["fake.amg (amg)",
                                                                            "fake.amg.methods (amg)"]}
    assert find_cycle(import_graph(root)) == ["fake.amg.methods", "fake.mitigate.registry", "fake.amg.methods"]


def test_a_computed_import_name_below_the_top_tier_fails(tmp_path):
    load = ("import importlib\nPROVIDERS = ('fake.amg.methods',)\n\n"
            "def load():\n    for mod in PROVIDERS:\n        importlib.import_module(mod)\n")
    root = fake_package(tmp_path, {"mitigate/registry.py": load, "api/report.py": load})
    assert computed_imports(root) == {"fake/mitigate/registry.py": [6]}


def test_an_unplaced_folder_and_an_import_of_the_facade_fail(tmp_path):
    root = fake_package(tmp_path, {"extras/tool.py": "", "mitigate/run.py": "from .. import __main__\n"})
    bad = layer_violations(root)
    assert bad["fake.extras.tool (extras)"] == ["the folder 'extras' is in no tier: add it to TIERS"]
    assert bad["fake.mitigate.run (mitigate)"] == ["fake.__main__ (facade)"]


def test_the_cycle_finder_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# --- evaluation tools stay out of the methods they judge ---

# A mitigation that could read the copy detector could optimise against it, as AMG's guidance optimises pixel NCC.
MITIGATION_FOLDERS = ("amg", "prss", "wen", "ietagc", "mitigate")
EVALUATION_ONLY = ("copydetect",)
EVALUATION_ONLY_USERS = {"mitigate.columns", "mitigate.digits", "amg.descriptor_sigma"}   # scoring; AMG's SSCD sigma


def evaluation_only_imports(package: Path) -> dict[str, list[str]]:
    """{module in a mitigation folder: the evaluation-only modules it reaches, directly or through other modules
    of the package}; the allowed scoring modules neither count nor pass them on."""
    files, graph, root = modules(package), import_graph(package), package.name
    guarded = {f"{root}.{m}" for m in EVALUATION_ONLY}
    allowed = {f"{root}.{m}" for m in EVALUATION_ONLY_USERS}
    out = {}
    for name in graph:
        if tier(name, files) not in MITIGATION_FOLDERS or name in allowed:
            continue
        seen, todo = set(), [name]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen and dep not in allowed:
                    seen.add(dep)
                    todo.append(dep)
        if seen & guarded:
            out[name] = sorted(seen & guarded)
    return out


def test_no_mitigation_reaches_the_copy_detector():
    bad = evaluation_only_imports(PACKAGE)
    assert not bad, f"the copy detector is an evaluation tool; these mitigation modules reach it: {bad}"


def test_a_mitigation_reaching_the_copy_detector_fails(tmp_path):
    root = fake_package(tmp_path, {
        "copydetect.py": "", "testbed/judge.py": "from ..copydetect import x\n",
        "amg/guidance.py": "from ..copydetect import x\n",
        "wen/scores.py": "import importlib\nimportlib.import_module('fake.copydetect')\n",
        "mitigate/run.py": "from ..testbed import judge\n"})
    assert evaluation_only_imports(root) == {
        "fake.amg.guidance": ["fake.copydetect"], "fake.wen.scores": ["fake.copydetect"],
        "fake.mitigate.run": ["fake.copydetect"],
        "fake.amg.study": ["fake.copydetect"]}   # through wen.scores
