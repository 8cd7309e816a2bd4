"""memlib.harness.reproduce on the real notebooks (quick parameters; a minute or two on 2 cores).

Each test runs in a copy of the repository's notebooks and memlib source (the kernel imports the copy through
PYTHONPATH), so a test can change the code and nothing touches the checkout's figures/ or build/. The testbeds
come from the session's quick runs (``quick_runs``), so no test trains one again; ``test_NN_*`` tests run on the
xdist worker that runs notebook NN, after it (tests/conftest.py).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memlib.cache import file_lock
from memlib.harness.reproduce import folder_files, reproduce, stale_reason
from memlib.paths import repo_root

pytestmark = pytest.mark.slow
REPO = repo_root()


@pytest.fixture
def real_project(tmp_path, monkeypatch):
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    shutil.copytree(REPO / "memlib", tmp_path / "code" / "memlib", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code" / "memlib"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "code"))   # the kernels import the copy
    return tmp_path


def _share_checkpoints(project, checkpoints):
    """The quick runs' checkpoints folder as the project's (reproduce --quick uses build/quick/checkpoints)."""
    (project / "build" / "quick").mkdir(parents=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (project / "build" / "quick" / "checkpoints").symlink_to(checkpoints)


def test_05_prss_figures_follow_a_change_to_the_magnitude_formula(real_project, quick_runs, monkeypatch):
    before = quick_runs.get("05_prss")   # run with the same code, its sweeps cached in before.cache
    _share_checkpoints(real_project, before.checkpoints)
    monkeypatch.setenv("MEMLIB_CACHE", str(before.cache))   # no cache clearing
    source = real_project / "code" / "memlib" / "sampling.py"
    text, n = re.subn(r"(def magnitude\(.*?\n(?:.*\n)*?\s+return )(.+)\n", r"\g<1>2 * (\g<2>)\n",
                      source.read_text(), count=1)
    assert n == 1, "memlib.sampling.magnitude not found: update this test to where the magnitude is computed"
    source.write_text(text)
    assert {o.status for o in reproduce(quick=True, only=["05_prss"])} == {"ran"}
    old, new = before.figures / "05_prss", real_project / "build" / "quick" / "figures" / "05_prss"
    m_old, m_new = (json.loads((f / "metrics.json").read_text())["metrics"] for f in (old, new))
    # PRSS's per-step threshold tau is a percentile of held-out magnitudes: twice the magnitude, twice tau
    assert m_new["tau"] == pytest.approx([2 * t for t in m_old["tau"]], rel=1e-5, abs=2e-6)
    assert (new / "magnitude_per_step.png").read_bytes() != (old / "magnitude_per_step.png").read_bytes()


RUN = "from memlib.harness.reproduce import reproduce; reproduce(quick=True, only=['02_explain'], force=True)"


@pytest.mark.makes_quick_run
def test_02_explain_run_twice_at_once_leaves_a_complete_correct_figures_folder(real_project, quick_runs):
    """Notebook 02's quick run under make test (nbval leaves it to this test): the second run starts once the
    first writes its figures, so the first installs its folder while the second runs, and the second replaces it."""
    stem, base = "02_explain", real_project / "build" / "quick"
    folder, executed = base / "figures" / stem, base / "executed"
    _share_checkpoints(real_project, quick_runs.checkpoints)   # testbed seeds 0 and 1 of notebooks 00 and 01

    def start():
        return subprocess.Popen([sys.executable, "-c", RUN], env=dict(os.environ), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = start()
    deadline = time.time() + 600
    while first.poll() is None and time.time() < deadline and \
            not any(executed.glob(f"staging-{stem}-*/figures/{stem}/*.png")):
        time.sleep(0.1)
    second = start()
    logs = [first.communicate(timeout=1200)[0]]
    with file_lock(executed / f".lock-{stem}"):   # the first run's folder, as it installed it
        installed = {k: (folder / k).read_bytes() for k in folder_files(folder)}
        installed_nb = (executed / f"{stem}.ipynb").read_bytes()
    logs.append(second.communicate(timeout=1200)[0])
    assert first.returncode == second.returncode == 0, logs
    quick_runs.record(stem, base / "figures", quick_runs.checkpoints, Path(os.environ["MEMLIB_CACHE"]))
    now = folder_files(folder)
    assert (executed / f"{stem}.ipynb").read_bytes() != installed_nb, "the second run did not install after the first"
    assert set(now) == set(installed) and "metrics.json" in now, logs
    assert {k: (folder / k).read_bytes() for k in now if k != "timings.json"} == \
        {k: v for k, v in installed.items() if k != "timings.json"}   # the same results, byte for byte
    stamp = json.loads((base / "stamps" / f"{stem}.json").read_text())
    assert stamp["files"] == now and stale_reason(base / "stamps" / f"{stem}.json", stamp["inputs"], folder) is None
    assert not list(executed.glob("staging-*"))
    assert json.loads((executed / f"{stem}.ipynb").read_text())["cells"]  # a whole notebook
    assert {o.status for o in reproduce(quick=True, only=[stem])} == {"skipped"}
