"""Reproducibility guarantees: incremental regeneration, failure isolation, resumable work, corrupt caches."""
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import numpy as np
import pytest
import torch

from memlib.harness.cache import cached_arrays


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("value = 1")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE = "from memlib.harness.provenance import write_metrics\nwrite_metrics('{stem}', {{'value': value}}, {{}})"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "code.py").write_text("x = 1\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code"))
    (tmp_path / "notebooks").mkdir()
    for stem in ("00_a", "01_b"):
        _notebook(tmp_path / "notebooks" / f"{stem}.ipynb", WRITE.format(stem=stem))
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    return tmp_path


def _statuses(outcomes):
    return {o.notebook: o.status for o in outcomes}


def test_reproduce_skips_unchanged_and_reruns_downstream(project):
    from memlib.harness.reproduce import reproduce

    assert _statuses(reproduce()) == {"00_a": "ran", "01_b": "ran"}
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "skipped"}
    _notebook(project / "notebooks" / "01_b.ipynb", WRITE.format(stem="01_b") + "\n# changed")
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "ran"}
    (project / "code" / "code.py").write_text("x = 2\n")  # a code change reruns everything
    assert _statuses(reproduce()) == {"00_a": "ran", "01_b": "ran"}
    _notebook(project / "notebooks" / "00_a.ipynb", WRITE.format(stem="00_a") + "\n# upstream change")
    assert _statuses(reproduce()) == {"00_a": "ran", "01_b": "ran"}


def test_failed_notebook_reports_its_cell_and_keeps_earlier_figures(project):
    from memlib.harness.reproduce import main, reproduce

    reproduce()
    metrics = project / "figures" / "01_b" / "metrics.json"
    before = metrics.read_bytes()
    _notebook(project / "notebooks" / "01_b.ipynb", "raise RuntimeError('boom')")
    out = reproduce()
    failed = [o for o in out if o.status == "failed"]
    assert [o.notebook for o in failed] == ["01_b"] and "RuntimeError: boom" in failed[0].detail
    assert metrics.read_bytes() == before
    assert main([]) == 1  # the command exits non-zero


def test_cache_detects_corruption_and_recomputes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(5)}

    assert cached_arrays("x", {"k": 1}, compute, tmp_path)["a"].tolist() == [0, 1, 2, 3, 4]
    cached_arrays("x", {"k": 1}, compute, tmp_path)
    assert len(calls) == 1
    entry = next(tmp_path.glob("x-*.npz"))
    entry.write_bytes(entry.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match="corrupt"):
        assert cached_arrays("x", {"k": 1}, compute, tmp_path)["a"].tolist() == [0, 1, 2, 3, 4]
    assert len(calls) == 2


TRAIN = """
import os
from memlib.testbed.build import TestbedRef, load_or_train
from memlib.testbed.model import TextToImageConfig
from memlib.train import TrainConfig
cfg = TestbedRef(preset='tiny', seed=7)
load_or_train(cfg.data_config(), TextToImageConfig(text_pretrain_steps=2),
              TrainConfig(steps={steps}, batch_size=4, seed=7,
              checkpoint_every=2), progress=False)
"""


def test_training_killed_by_a_signal_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from memlib.testbed.model import TextToImageConfig
    from memlib.testbed.build import TestbedRef, checkpoint_folder, load_or_train
    from memlib.train import TrainConfig

    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path / "ck"))
    cfg = TestbedRef(preset="tiny", seed=7)
    args = (cfg.data_config(), TextToImageConfig(text_pretrain_steps=2),
            TrainConfig(steps=80, batch_size=4, seed=7, checkpoint_every=2))
    folder = checkpoint_folder(*args)
    proc = subprocess.Popen([sys.executable, "-c", TRAIN.format(steps=80)], env=dict(os.environ))
    deadline = time.time() + 300
    while time.time() < deadline and not (folder / "meta.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    step = json.loads((folder / "meta.json").read_text())["step"]
    assert 2 <= step < 80, "the run should have been interrupted after a checkpoint"
    resumed = load_or_train(*args, progress=False)
    assert resumed.train_state["step"] == 80 and len(resumed.train_state["history"]) == 80
    straight = load_or_train(*args, retrain=True, progress=False)
    for k, v in resumed.model.state_dict().items():
        assert torch.allclose(v, straight.model.state_dict()[k], atol=1e-5), k
