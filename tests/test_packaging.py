"""memlib installed outside a checkout: package data, where outputs go, no training unasked, one-line errors.

"Outside a checkout" runs ``python -m memlib`` in a subprocess on a copy of the package in a temporary folder
(no ``pyproject.toml`` beside it), from an empty working folder, with no MEMLIB_* variable but MEMLIB_HOME:
the same situation as a wheel in site-packages (``make wheel-check`` tests the wheel itself).
"""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import memlib
from memlib import paths
from memlib.api.cli import main

PACKAGE = Path(memlib.__file__).parent
ROOT = PACKAGE.parent


def test_every_package_folder_has_an_init_and_the_package_data_is_declared():
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert (PACKAGE / "py.typed").is_file()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["memlib"]
    assert "py.typed" in declared and "data/nemo/*" in declared


def test_nemo_prompts_are_read_from_the_package():
    from memlib.prompt_files import read_prompts
    from memlib.prompts import nemo_dir

    assert nemo_dir() == PACKAGE / "data" / "nemo"
    assert (nemo_dir() / "LICENSE").is_file()
    assert len(read_prompts("nemo:memorized")) == 500


def test_an_install_writes_under_memlib_home_and_creates_nothing_until_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PACKAGE", tmp_path / "site-packages" / "memlib")   # no pyproject.toml beside it
    for var in ("MEMLIB_ROOT", "MEMLIB_CHECKPOINTS", "MEMLIB_CACHE", "MEMLIB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MEMLIB_HOME", str(tmp_path / "home"))
    assert paths.checkout_root() is None
    with pytest.raises(paths.CheckoutNotFoundError, match="MEMLIB_ROOT"):
        paths.repo_root()
    assert paths.checkpoints_dir() == tmp_path / "home" / "checkpoints"
    assert paths.cache_dir() == tmp_path / "home" / "cache"
    assert paths.outputs_dir("detect") == tmp_path / "home" / "outputs" / "detect"
    assert not (tmp_path / "home").exists()
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path / "clone"))
    assert paths.checkpoints_dir() == tmp_path / "clone" / "checkpoints"
    assert paths.outputs_dir("explain") == tmp_path / "clone" / "build" / "outputs" / "explain"


def test_the_api_refuses_to_train_a_missing_testbed(tmp_path, monkeypatch):
    import memlib.testbed.build as build
    from memlib.api import model_setup
    from memlib.checkpoint import CheckpointError

    monkeypatch.setattr(build, "load_or_train", lambda *a, **k: pytest.fail("the testbed was loaded or trained"))
    monkeypatch.setattr(model_setup, "_SHIPPED", {})
    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError) as e:
        memlib.detect(demo=True, out=tmp_path / "s.csv", progress=False)
    msg = str(e.value)
    assert isinstance(e.value, model_setup.TestbedNotTrainedError) and "\n" not in msg
    assert "MEMLIB_ROOT" in msg and "MEMLIB_CHECKPOINTS" in msg and "memlib train-testbed" in msg
    assert not (tmp_path / "empty").exists() and not (tmp_path / "s.csv").exists() and not model_setup._SHIPPED


def test_training_the_testbed_is_its_own_command(monkeypatch, capsys, tmp_path):
    from types import SimpleNamespace

    from memlib.testbed.build import TestbedRef

    calls = []
    monkeypatch.setattr(TestbedRef, "load", lambda self, progress=True: calls.append((self, progress))
                        or SimpleNamespace(folder=tmp_path / "t2i-x"))
    assert main(["train-testbed", "--quiet"]) == 0
    assert calls == [(TestbedRef(), False)] and f"trained: {tmp_path / 't2i-x'}" in capsys.readouterr().out


def test_default_outputs_go_under_the_checkout_build_folder_and_are_printed(tmp_path, monkeypatch, capsys):
    (tmp_path / "clone").mkdir()
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path / "clone"))
    monkeypatch.chdir(tmp_path / "clone")
    assert main(["detect", "--model", "tiny-sd", "--prompts", "nemo:memorized", "--max-prompts", "1",
                 "--num-steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    csv = tmp_path / "clone" / "build" / "outputs" / "detect" / "tiny-sd" / "scores.csv"
    assert csv.is_file() and f"wrote {csv}" in out and "RANDOM weights" in out
    assert sorted(p.name for p in (tmp_path / "clone").iterdir()) == ["build"]


def test_reproduce_forwards_its_arguments(monkeypatch, capsys):
    import memlib.harness.reproduce as rep

    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--quick", "--help"])
    assert e.value.code == 0 and "usage: memlib reproduce" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr(rep, "reproduce", lambda quick, only, force, device=None, dtype=None:
                        seen.append((quick, only, force, device, dtype)) or [])
    assert main(["reproduce", "--quick", "--only", "00_testbed"]) == 0
    assert main(["reproduce", "--only", "06_ietagc", "--device", "cpu"]) == 0
    assert seen == [(True, ["00_testbed"], False, None, None), (False, ["06_ietagc"], False, "cpu", None)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``run(*args)``: ``python -m memlib ARGS`` on a copy of the package, from an empty folder, outside a checkout."""
    base = tmp_path_factory.mktemp("installed")
    shutil.copytree(PACKAGE, base / "lib" / "memlib", ignore=shutil.ignore_patterns("__pycache__"))
    (base / "work").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLIB_")}
    env.update(PYTHONPATH=str(base / "lib"), MEMLIB_HOME=str(base / "home"), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")

    def run(*args, timeout=300):
        return subprocess.run([sys.executable, *args], cwd=base / "work", env=env, capture_output=True, text=True,
                              timeout=timeout)

    # the copy is what runs, and nothing marks its parent as a checkout
    assert run("-c", "import memlib; print(memlib.__file__)").stdout.startswith(str(base / "lib" / "memlib"))
    assert not (base / "lib" / "pyproject.toml").exists()
    run.base = base
    return run


@pytest.mark.slow
def test_outside_a_checkout_the_testbed_is_refused_in_one_line_without_training(installed):
    # a training run would take 40 minutes: the timeout turns one into a failure
    r = installed("-m", "memlib", "detect", "--model", "testbed", "--demo", timeout=240)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "MEMLIB_ROOT" in r.stderr and "MEMLIB_CHECKPOINTS" in r.stderr and "memlib train-testbed" in r.stderr
    assert not (installed.base / "home" / "checkpoints").exists()
    assert not any((installed.base / "work").iterdir())


@pytest.mark.slow
def test_outside_a_checkout_doctor_methods_and_tiny_sd_on_nemo_work_and_leave_the_folder_empty(installed):
    doctor, methods = installed("-m", "memlib", "doctor"), installed("-m", "memlib", "methods")
    assert doctor.returncode == 0 and "note  testbed" in doctor.stdout, doctor.stdout + doctor.stderr
    assert "; installed" in doctor.stdout   # memlib saw itself outside a checkout
    assert methods.returncode == 0 and "wen_pe" in methods.stdout, methods.stderr
    r = installed("-m", "memlib", "detect", "--model", "tiny-sd", "--prompts", "nemo", "--max-prompts", "2",
                  "--num-steps", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    csv = installed.base / "home" / "outputs" / "detect" / "tiny-sd" / "scores.csv"
    assert "RANDOM weights" in r.stdout and f"wrote {csv}" in r.stdout
    assert len(csv.read_text().splitlines()) == 1 + 4   # 2 memorized + 2 non-memorized NeMo prompts
    assert not any((installed.base / "work").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [["results"], ["reproduce", "--quick"]])
def test_outside_a_checkout_the_project_commands_answer_in_one_line(installed, cmd):
    r = installed("-m", "memlib", *cmd)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "MEMLIB_ROOT" in r.stderr and "Traceback" not in r.stderr
    assert not any((installed.base / "work").iterdir())
