"""memlib.harness.reproduce on tiny fake notebooks: incremental regeneration, figures checked against their
stamps, failed, concurrent and interrupted runs. The real notebooks are run in test_reproduce_notebooks.py."""
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

WRITE = "from memlib.provenance import write_metrics\nwrite_metrics('{stem}', {{'value': value}}, {{}})"
# writes several files a second apart (after saying it started), so a second run overlaps it
SLOW = """import os, pathlib, time
from memlib.provenance import write_metrics, write_table
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


RUN = "from memlib.harness.reproduce import reproduce; reproduce(quick=True, only=['00_a'], force=True)"


@pytest.mark.slow
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


def test_the_checkpoint_record_ignores_set_aside_and_half_written_copies_and_sees_nested_metas(project):
    from memlib.harness.reproduce import checkpoint_record

    ck = project / "checkpoints"
    (ck / "t2i-abc").mkdir(parents=True)
    (ck / "t2i-abc" / "meta.json").write_text('{"sha256": "1"}')
    (ck / "ietagc-run" / "final").mkdir(parents=True)
    (ck / "ietagc-run" / "final" / "meta.json").write_text('{"step": 1}')
    used = [ck / "t2i-abc", ck / "ietagc-run" / "final", project / "elsewhere"]
    before = checkpoint_record(ck, used)
    assert set(before) == {"t2i-abc", "ietagc-run"}
    for junk in ("t2i-abc.corrupt-20250101-120000-42", "t2i-abc.corrupt", "t2i-abc.tmp", "t2i-abc.old"):
        (ck / junk).mkdir()
        (ck / junk / "meta.json").write_text('{"sha256": "2"}')
    assert checkpoint_record(ck, used + [ck / "t2i-abc.tmp"]) == before
    (ck / "ietagc-run" / "final" / "meta.json").write_text('{"step": 2}')   # a run folder keeps it in final/
    assert checkpoint_record(ck, used)["ietagc-run"] != before["ietagc-run"]
    (ck / "t2i-abc" / "meta.json").unlink()
    assert checkpoint_record(ck, used)["t2i-abc"] == "missing"


READ_AND_WRITE = """import os, pathlib, torch
from memlib.checkpoint import read_meta, save_checkpoint
from memlib.provenance import write_metrics
ck = pathlib.Path(os.environ["MEMLIB_CHECKPOINTS"])
if not (ck / "made-by-00").exists():
    save_checkpoint(ck / "made-by-00", torch.nn.Linear(1, 1), {{"step": 1}})
write_metrics('{stem}', {{'value': read_meta(ck / "shipped")["v"]}}, {{}})"""


@pytest.mark.slow
def test_a_notebook_reruns_when_a_checkpoint_it_reads_changes_and_a_second_run_skips_everything(project):
    from memlib.harness.reproduce import reproduce

    ck = project / "build" / "quick" / "checkpoints"
    (ck / "shipped").mkdir(parents=True)
    (ck / "shipped" / "meta.json").write_text('{"v": 1}')
    (ck / "unread").mkdir()
    (ck / "unread" / "meta.json").write_text('{"v": 1}')
    _notebook(project / "notebooks" / "00_a.ipynb", READ_AND_WRITE.format(stem="00_a"))
    assert _statuses(reproduce(quick=True)) == {"00_a": "ran", "01_b": "ran"}
    assert (ck / "made-by-00" / "meta.json").exists()
    # what 00 wrote is recorded as it left it: the next unchanged run is a fixed point
    assert _statuses(reproduce(quick=True)) == {"00_a": "skipped", "01_b": "skipped"}
    (ck / "unread" / "meta.json").write_text('{"v": 2}')    # no notebook reads it
    assert _statuses(reproduce(quick=True)) == {"00_a": "skipped", "01_b": "skipped"}
    (ck / "shipped" / "meta.json").write_text('{"v": 1, "retrained": true}')   # 00 reads it; its results stay
    out = reproduce(quick=True)
    assert _statuses(out) == {"00_a": "ran", "01_b": "skipped"} and out[0].detail == "checkpoints changed: shipped"
    (ck / "shipped" / "meta.json").write_text('{"v": 3}')    # 00's results change: 01 may read them
    assert _statuses(reproduce(quick=True)) == {"00_a": "ran", "01_b": "ran"}
    stamp = project / "build" / "quick" / "stamps" / "00_a.json"
    for damage in ("", "[]"):    # a damaged stamp: the notebook runs again, no traceback
        stamp.write_text(damage)
        assert _statuses(reproduce(quick=True, only=["00_a"])) == {"00_a": "ran"}


def test_staging_left_by_a_killed_run_is_swept_and_a_live_runs_is_kept(project):
    from memlib.harness.reproduce import sweep_staging

    ex = project / "executed"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f"staging-00_a-pid{dead.stdout.strip()}-x1", "staging-00_a-old", f"staging-01_b-pid{os.getpid()}-x2"):
        (ex / name / "figures").mkdir(parents=True)
    sweep_staging(ex)
    assert [p.name for p in ex.iterdir()] == [f"staging-01_b-pid{os.getpid()}-x2"]


def test_only_without_names_is_an_error_listing_the_notebooks(project, capsys):
    from memlib.harness.reproduce import main

    with pytest.raises(SystemExit, match="00_a.*01_b"):
        main(["--only"])
    assert not (project / "figures" / "00_a").exists()


@pytest.mark.slow
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


def test_a_stamp_made_on_another_device_is_stale_and_an_old_stamp_counts_as_the_cpu(project):
    from memlib.harness.reproduce import folder_files, stale_reason

    folder = project / "figures" / "00_a"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    stamp = project / "stamp.json"
    body = {"inputs": "h", "files": folder_files(folder)}
    stamp.write_text(json.dumps(body))                               # written before stamps recorded a device
    assert stale_reason(stamp, "h", folder, compute_tag="cpu:fp32") is None
    assert "now on cuda:fp32" in stale_reason(stamp, "h", folder, compute_tag="cuda:fp32")
    stamp.write_text(json.dumps(dict(body, compute="cuda:fp16")))
    assert stale_reason(stamp, "h", folder, compute_tag="cuda:fp16") is None
    assert stale_reason(stamp, "h", folder, compute_tag="cpu:fp32") == "computed on cuda:fp16, now on cpu:fp32"


def test_the_summary_says_plainly_when_values_come_from_another_device():
    import torch

    from memlib.device import Compute
    from memlib.harness.reproduce import Outcome, summary

    ran = [Outcome("00_a", "ran", 1.0)]
    assert "NOTE" not in summary(ran)
    note = summary(ran, Compute(torch.device("cuda"), torch.float16))
    assert "computed on cuda in fp16, not on the CPU" in note and "compare-device" in note
    assert "NOTE" not in summary([Outcome("00_a", "skipped")], Compute(torch.device("cuda")))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a refusal on a machine without a GPU")
def test_reproduce_refuses_a_device_this_machine_lacks_before_running_anything(project):
    from memlib.harness.reproduce import reproduce

    with pytest.raises(SystemExit, match="--device cuda"):
        reproduce(device="cuda")
    with pytest.raises(SystemExit, match="dtype"):
        reproduce(device="cpu", dtype="fp16")
    assert not (project / "build").exists()


@pytest.mark.slow
def test_device_reaches_every_notebook_and_its_stamp(project):
    from memlib.harness.reproduce import reproduce

    for stem in ("00_a", "01_b"):
        _notebook(project / "notebooks" / f"{stem}.ipynb", "from memlib.provenance import write_metrics\n"
                  f"write_metrics('{stem}', {{'value': value}}, {{'device': device}})")
        nb = nbformat.read(project / "notebooks" / f"{stem}.ipynb", as_version=4)
        nb.cells[0].source = 'value = 1\ndevice = "auto"\ndtype = "fp32"'
        nbformat.write(nb, project / "notebooks" / f"{stem}.ipynb")
    assert _statuses(reproduce(device="cpu")) == {"00_a": "ran", "01_b": "ran"}
    metrics = json.loads((project / "figures" / "00_a" / "metrics.json").read_text())
    assert metrics["provenance"]["parameters"]["device"] == "cpu"
    assert metrics["provenance"]["compute_device"] == "cpu"
    stamp = json.loads((project / "build" / "full" / "stamps" / "01_b.json").read_text())
    assert stamp["compute"] == "cpu:fp32"
    if not __import__("torch").cuda.is_available():   # auto is the CPU here: the same device, nothing reruns
        assert _statuses(reproduce()) == {"00_a": "skipped", "01_b": "skipped"}
