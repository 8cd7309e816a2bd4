"""Test setup: every test writes checkpoints, figures and caches under a temporary folder, offline."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# make test runs pytest-xdist workers: the cores are shared out among them, here and in the kernels they start
_threads = max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(base / "checkpoints"))
    monkeypatch.setenv("MEMLIB_FIGURES", str(base / "figures"))
    monkeypatch.setenv("MEMLIB_CACHE", str(base / "cache"))


@pytest.fixture(scope="session")
def tiny_testbed(tmp_path_factory):
    """A testbed trained for a few steps on the 'tiny' preset (shared by tests; seconds to build)."""
    os.environ["MEMLIB_CHECKPOINTS"] = str(tmp_path_factory.getbasetemp() / "checkpoints")
    from memlib.testbed.build import TestbedRef

    return TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4).load(progress=False)
