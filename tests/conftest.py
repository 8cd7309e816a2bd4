"""Test setup: every test writes checkpoints, figures and caches under a temporary folder, offline.

``make test`` runs the notebooks' quick copies through nbval beside these tests on pytest-xdist workers
(``--dist loadgroup``, groups defined here). A notebook's cells and the tests named ``test_NN_*`` in
test_notebooks.py and test_reproduce_notebooks.py (which read notebook NN's quick run) form one group, run on
one worker in that order; every other module is a group of its own. Groups are queued longest first: notebooks,
then modules with slow tests, then the rest.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# make test runs pytest-xdist workers: the cores are shared out among them, here and in the kernels they start
_threads = max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)

# where make test's nbval runs write (read before any test points these variables at its own folders)
_NBVAL = {k: os.environ.get(k) for k in ("MEMLIB_NOTEBOOK_FIGURES", "MEMLIB_CHECKPOINTS", "MEMLIB_CACHE")}

# notebooks 00, 01 and 02 train and share the quick testbed's seeds 0 and 1: one worker runs them in turn
_TESTBED_NOTEBOOKS = ("00", "01", "02")
# longest first (make test on 2 busy cores: the testbed group 6 min with its reruns, 03 3 min, 05 2 min, 04 and 06 1)
_NOTEBOOK_GROUPS = ["testbed-notebooks", "notebook-03", "notebook-05", "notebook-04", "notebook-06"]
_NOTEBOOK_TESTS = ("test_notebooks.py", "test_reproduce_notebooks.py")
_NUMBERED = re.compile(r"test_(\d\d)_")


def group_of(nodeid: str) -> str:
    """The group of a collected item, from its node id (the xdist controller sees nothing else)."""
    path, _, name = nodeid.partition("::")
    number = Path(path).name[:2] if path.endswith(".ipynb") else None
    numbered = _NUMBERED.match(name)
    if Path(path).name in _NOTEBOOK_TESTS and numbered:
        number = numbered.group(1)
    if number is None:
        return path
    return "testbed-notebooks" if number in _TESTBED_NOTEBOOKS else f"notebook-{number}"


@pytest.hookimpl(tryfirst=True, optionalhook=True)   # optional: pytest without pytest-xdist runs the tests too
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        """Whole groups to a worker, in collection order (pytest-xdist's own loadgroup reads xdist_group marks
        through a node id suffix that pytest 9 no longer lets it set)."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Groups(config, log)


def pytest_collection_modifyitems(config, items):
    """Groups queued longest first; in a group, nbval's cells, then a test that makes the quick run in nbval's
    stead (``makes_quick_run``), then the tests that read it."""
    groups = {}
    for item in items:
        groups.setdefault(group_of(item.nodeid), []).append(item)
    slow = {g for g, its in groups.items() if any(it.get_closest_marker("slow") for it in its)}

    def rank(group):
        if group in _NOTEBOOK_GROUPS:
            return _NOTEBOOK_GROUPS.index(group)
        return len(_NOTEBOOK_GROUPS) + (0 if group.startswith("notebook-") else 1 if group in slow else 2)

    def phase(item):
        return 0 if item.path.suffix == ".ipynb" else 1 if item.get_closest_marker("makes_quick_run") else 2

    items[:] = [it for g in sorted(groups, key=rank) for it in sorted(groups[g], key=phase)]


_NBVAL_STEMS = pytest.StashKey[set]()


def pytest_collection_finish(session):
    session.config.stash[_NBVAL_STEMS] = {item.path.stem for item in session.items if item.path.suffix == ".ipynb"}


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(base / "checkpoints"))
    monkeypatch.setenv("MEMLIB_FIGURES", str(base / "figures"))
    monkeypatch.setenv("MEMLIB_CACHE", str(base / "cache"))


@dataclass
class QuickRun:
    """A notebook's run with its quick parameters: ``figures/<stem>/`` holds its outputs; the checkpoints and
    cache it used."""
    figures: Path
    checkpoints: Path
    cache: Path


class QuickRuns:
    """Each notebook's quick run, executed once per session: nbval's (``make test``), the one a test marked
    ``makes_quick_run`` recorded, or else one run here."""

    def __init__(self, nbval_stems: set[str], base: Path):
        self.nbval_stems, self.base, self.runs = nbval_stems, base, {}
        self.own = QuickRun(base / "figures", base / "checkpoints", base / "cache")
        nbval = _NBVAL["MEMLIB_NOTEBOOK_FIGURES"]
        self.nbval = QuickRun(Path(nbval), Path(_NBVAL["MEMLIB_CHECKPOINTS"] or self.own.checkpoints),
                              Path(_NBVAL["MEMLIB_CACHE"] or self.own.cache)) if nbval else None

    @property
    def checkpoints(self) -> Path:
        """Where this session's quick runs keep the testbeds they train."""
        return (self.nbval or self.own).checkpoints

    def record(self, stem: str, figures: Path, checkpoints: Path, cache: Path) -> None:
        self.runs[stem] = QuickRun(figures, checkpoints, cache)

    def get(self, stem: str) -> QuickRun:
        if stem in self.runs:
            return self.runs[stem]
        nbval_wrote = self.nbval is not None and (self.nbval.figures / stem / "metrics.json").exists()
        if stem in self.nbval_stems and not nbval_wrote:
            pytest.fail(f"nbval's run of {stem} wrote no metrics.json: its failing cell is reported above")
        if nbval_wrote:
            self.runs[stem] = self.nbval
            return self.nbval
        from memlib.harness.reproduce import QUICK_PARAMS, notebooks, run_notebook
        from memlib.paths import repo_root

        nb = next(p for p in notebooks(repo_root()) if p.stem == stem)
        run = QuickRun(self.own.figures, self.checkpoints, self.own.cache)
        run_notebook(nb, self.base / "executed" / nb.name, QUICK_PARAMS[stem], run.figures,
                     env={"TQDM_DISABLE": "1", "MEMLIB_CHECKPOINTS": str(run.checkpoints),
                          "MEMLIB_CACHE": str(run.cache)})
        self.runs[stem] = run
        return run


@pytest.fixture(scope="session")
def quick_runs(request, tmp_path_factory):
    return QuickRuns(request.config.stash.get(_NBVAL_STEMS, set()), tmp_path_factory.mktemp("quick-runs"))


@pytest.fixture(scope="session")
def tiny_testbed(tmp_path_factory):
    """A testbed trained for a few steps on the 'tiny' preset (shared by tests; seconds to build)."""
    os.environ["MEMLIB_CHECKPOINTS"] = str(tmp_path_factory.getbasetemp() / "checkpoints")
    from memlib.testbed.build import TestbedRef

    return TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4).load(progress=False)


@pytest.fixture(scope="session")
def tiny_data():
    """The testbed's data on the 'tiny' preset, seed 0 (what the quick notebook runs train on)."""
    from memlib.testbed.build import PRESETS
    from memlib.testbed.data import TestbedDataConfig, make_testbed_data

    return make_testbed_data(TestbedDataConfig(seed=0, **PRESETS["tiny"]))


@pytest.fixture(scope="session")
def tiny_sd():
    """A Stable Diffusion pipeline with tiny random weights (the real diffusers code; seconds to build)."""
    from memlib.backends.stable_diffusion import StableDiffusionBackend

    return StableDiffusionBackend.tiny_random(seed=0)


@pytest.fixture(scope="session")
def tiny_sd_folder(tiny_sd, tmp_path_factory):
    """``tiny_sd`` saved with ``save_pretrained``: a user's local model folder."""
    return tiny_sd.save_pretrained(tmp_path_factory.mktemp("tiny_sd"))
