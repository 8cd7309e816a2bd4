"""Regeneration you can trust (issue 27): caches keyed by code and weights, figures checked against their stamps,
concurrent and interrupted runs, corrupt files kept. Notebooks here are tiny fakes; the real ones are exercised in
test_regeneration_notebooks.py."""
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

WRITE = "from memlib.harness.provenance import write_metrics\nwrite_metrics('{stem}', {{'value': value}}, {{}})"
# writes several files a second apart (after saying it started), so a second run overlaps it
SLOW = """import os, pathlib, time
from memlib.harness.provenance import write_metrics, write_table
pathlib.Path(os.environ["STARTED"]).touch()
for i in range(8):
    write_table('{stem}', f'part{{i}}', [{{'i': i, 'value': value}}])
    time.sleep(1.0)
write_metrics('{stem}', {{'value': value}}, {{}})"""


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("value = 1")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


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


# 1. cache keys cover the code and the weights

def test_cache_recomputes_when_the_code_changes(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "generate.py").write_text(f"magnitude = '{name}'\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "v1"))
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    assert len(calls) == 1
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "v2"))  # the same key, computed by other code
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    assert len(calls) == 2


def test_weights_fingerprint_follows_the_weights_not_the_name():
    from memlib.backends.ddpm import DDPMBackend
    from memlib.harness.cache import weights_fingerprint

    a, a_again, b = DDPMBackend.tiny_random(seed=0), DDPMBackend.tiny_random(seed=0), DDPMBackend.tiny_random(seed=1)
    assert weights_fingerprint(a) == weights_fingerprint(a_again)
    assert weights_fingerprint(a.unet) == weights_fingerprint(a_again.unet) != weights_fingerprint(b.unet)
    assert weights_fingerprint(a) != weights_fingerprint(b)
    with torch.no_grad():
        next(a_again.unet.parameters())[0].add_(1e-3)  # new weights under the same name
    assert weights_fingerprint(a) != weights_fingerprint(a_again)
    with pytest.raises(TypeError, match="no model weights"):
        weights_fingerprint(object())


@pytest.fixture(scope="module")
def tiny_sd():
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    return StableDiffusionBackend.tiny_random(seed=0)


def test_detection_sweep_recomputes_for_new_code_or_new_weights(tiny_sd, tmp_path, monkeypatch):
    import memlib.wen.scores as scores
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    from memlib.generation import GenerationConfig

    runs = []
    real = scores.generate
    monkeypatch.setattr(scores, "generate", lambda *a, **k: runs.append(1) or real(*a, **k))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("x = 1\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code"))
    cfg = GenerationConfig(num_steps=2, n_gens=1, guidance_scale=3.0)
    first = scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 1
    other = StableDiffusionBackend.tiny_random(seed=1)  # other weights, the same label
    scores.detection_sweep(other, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 2
    (tmp_path / "code2").mkdir()
    (tmp_path / "code2" / "m.py").write_text("x = 2\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code2"))
    again = scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 3 and np.allclose(again["text_norm"], first["text_norm"])


# 2. other backends get their own folder; figures are checked against their stamp

def test_other_backend_results_never_overwrite_the_reference_figures(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from memlib.harness.provenance import figures_name, write_metrics, write_table
    from memlib.plotting import save_figure

    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    monkeypatch.delenv("MEMLIB_FIGURES")  # as a user runs a notebook by hand: the repository's figures/
    assert figures_name("01_detection", "testbed") == "01_detection"
    write_metrics(figures_name("01_detection"), {"auc": 0.9}, {})
    reference = tmp_path / "figures" / "01_detection"
    before = {p.name: p.read_bytes() for p in reference.iterdir()}

    name = figures_name("01_detection", "tiny-sd", max_prompts=3)
    assert name.startswith("runs/01_detection-tiny-sd-") and "01_detection/" not in name
    assert figures_name("01_detection", "/models/my-sd/", max_prompts=3).startswith("runs/01_detection-my-sd-")
    assert name != figures_name("01_detection", "tiny-sd", max_prompts=4)
    assert figures_name("01_detection", "testbed", max_gens=4) != "01_detection"  # other data or settings
    write_metrics(name, {"auc": 0.5}, {"backend": "tiny-sd"})
    write_table(name, "rows", [{"a": 1}])
    save_figure(plt.figure(), name, "roc")
    run = tmp_path / "figures" / name
    assert {p.name for p in run.iterdir()} >= {"metrics.json", "rows.csv", "roc.png"}
    assert {p.name: p.read_bytes() for p in reference.iterdir()} == before


def test_reproduce_regenerates_figures_missing_changed_or_added_since_the_stamp(project):
    from memlib.harness.reproduce import reproduce

    assert _statuses(reproduce()) == {"00_a": "ran", "01_b": "ran"}
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "skipped"}
    metrics = project / "figures" / "01_b" / "metrics.json"
    good = metrics.read_bytes()
    metrics.unlink()                                               # missing
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "ran"} and metrics.read_bytes() == good
    metrics.write_text(good.decode().replace('"value": 1', '"value": 2'))   # overwritten, e.g. by a run by hand
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "ran"} and metrics.read_bytes() == good
    (project / "figures" / "00_a" / "roc.png").write_bytes(b"another model's figure")   # added
    assert _statuses(reproduce()) == {"00_a": "ran", "01_b": "skipped"}
    assert not (project / "figures" / "00_a" / "roc.png").exists()
    assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "skipped"}


# 3. concurrent runs

RUN = "from memlib.harness.reproduce import reproduce; reproduce(quick=True, only=['00_a'], force=True)"


def test_two_concurrent_runs_leave_a_complete_figures_folder_and_a_true_stamp(project):
    _notebook(project / "notebooks" / "00_a.ipynb", SLOW.format(stem="00_a"))
    started = project / "started"
    procs = []
    for _ in range(2):  # the second starts once the first is writing its figures: their writes overlap
        procs.append(subprocess.Popen([sys.executable, "-c", RUN], env=dict(os.environ, STARTED=str(started)),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.time() + 120
        while not started.exists() and time.time() < deadline:
            time.sleep(0.1)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    base = project / "build" / "quick"
    folder = base / "figures" / "00_a"
    # timings.json: the wall time the harness records beside every notebook's figures (README time table)
    expected = {f"part{i}.csv" for i in range(8)} | {"metrics.json", "timings.json"}
    assert {p.name for p in folder.iterdir()} == expected, logs
    from memlib.harness.reproduce import folder_files, reproduce, stale_reason

    stamp = json.loads((base / "stamps" / "00_a.json").read_text())
    assert stamp["files"] == folder_files(folder)
    assert not list((base / "executed").glob("staging-*"))
    assert json.loads((base / "executed" / "00_a.ipynb").read_text())["cells"]  # a whole notebook
    assert _statuses(reproduce(quick=True, only=["00_a"])) == {"00_a": "skipped"}
    assert stale_reason(base / "stamps" / "00_a.json", stamp["inputs"], folder) is None


# 6. corrupt cache entries are kept; the input hash sees only real checkpoints

def test_corrupt_cache_entry_is_kept_aside_not_deleted(tmp_path):
    def compute():
        return {"a": np.arange(5)}

    cached_arrays("x", {"k": 1}, compute, tmp_path)
    entry = next(tmp_path.glob("x-*.npz"))
    entry.write_bytes(entry.read_bytes()[:20])
    with pytest.warns(UserWarning, match="corrupt.*kept it as"):
        assert cached_arrays("x", {"k": 1}, compute, tmp_path)["a"].tolist() == [0, 1, 2, 3, 4]
    kept = list(tmp_path.glob(f"{entry.name}.corrupt*"))
    assert len(kept) == 1 and len(kept[0].read_bytes()) == 20


def test_input_hash_ignores_set_aside_and_half_written_checkpoints(project):
    from memlib.harness.reproduce import input_hashes, notebooks

    ck = project / "checkpoints"
    (ck / "t2i-abc").mkdir(parents=True)
    (ck / "t2i-abc" / "meta.json").write_text('{"sha256": "1"}')
    nbs = notebooks(project)
    before = input_hashes(project, nbs, {}, ck)
    for junk in ("t2i-abc.corrupt-20250101-120000-42", "t2i-abc.corrupt", "t2i-abc.tmp", "t2i-abc.old"):
        (ck / junk).mkdir()
        (ck / junk / "meta.json").write_text('{"sha256": "2"}')
    assert input_hashes(project, nbs, {}, ck) == before
    (ck / "t2i-abc" / "meta.json").write_text('{"sha256": "3"}')  # a real checkpoint did change
    assert input_hashes(project, nbs, {}, ck) != before


# 9. the command line: --only without names, Ctrl-C

def test_only_without_names_is_an_error_listing_the_notebooks(project, capsys):
    from memlib.harness.reproduce import main

    with pytest.raises(SystemExit, match="00_a.*01_b"):
        main(["--only"])
    assert not (project / "figures" / "00_a").exists()


def test_ctrl_c_prints_the_summary_and_leaves_the_last_good_executed_copy(project):
    from memlib.harness.reproduce import reproduce

    reproduce()
    executed = project / "build" / "full" / "executed" / "00_a.ipynb"
    stamp = project / "build" / "full" / "stamps" / "00_a.json"
    good_nb, good_stamp = executed.read_bytes(), stamp.read_bytes()
    marker = project / "started"
    _notebook(project / "notebooks" / "00_a.ipynb",
              f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-m", "memlib.harness.reproduce"], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith(("00_a", "01_b"))}
    assert "interrupted" in lines["00_a"] and "not run" in lines["01_b"], out
    assert executed.read_bytes() == good_nb and stamp.read_bytes() == good_stamp
    assert "time.sleep" not in executed.read_text()
