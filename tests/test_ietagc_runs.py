"""Notebook 06's run files: damaged final weights are set aside and rebuilt from what the run saved; a damaged or
incomplete progress.json is a one-line error naming the file and what to do."""
import json
import warnings

import pytest
import torch

from memlib.checkpoint import CheckpointError, load_weights
from memlib.ietagc.launch import model_config
from memlib.ietagc.probe import read_progress
from memlib.ietagc.runs import launch
from memlib.testbed.model import make_unconditional_unet

SPEC = {"iet": {"shards": 2, "rounds": 2, "steps_per_round": 2, "batch_size": 8, "warmup_steps": 1, "agc": True},
        "data": {"n_duplicated": 2, "copies": 3, "max_images": 48},
        "model": {"block_out_channels": [16, 32]}, "probe": {"n_samples": 0}}


def _weights(folder):
    unet = make_unconditional_unet(model_config(SPEC))
    load_weights(folder / "final", unet)
    return unet.state_dict()


def test_truncated_final_weights_are_set_aside_and_rebuilt_from_the_saved_rounds():
    folder = launch("iet-s0", SPEC, ranks=1)
    before = _weights(folder)
    rounds = {p.name: p.stat().st_mtime_ns for p in (folder / "rounds").iterdir()}
    path = folder / "final" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])                    # a copy cut short
    with pytest.warns(UserWarning, match="final weights of run iet-s0 are damaged"):
        assert launch("iet-s0", SPEC, ranks=1) == folder
    after = _weights(folder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "rounds").iterdir()} == rounds   # nothing retrained
    kept = [p for p in folder.iterdir() if p.name.startswith("final.corrupt-")]
    assert len(kept) == 1 and (kept[0] / "model.safetensors").stat().st_size == 1000      # the user's file, kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # sound weights: nothing set aside again
        launch("iet-s0", SPEC, ranks=1)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"round-000": 3}', "\udcff"])
def test_damaged_progress_is_one_line_naming_the_file_and_what_to_do(tmp_path, text):
    (tmp_path / "progress.json").write_text(text, errors="surrogateescape")
    with pytest.raises(CheckpointError, match="progress.json is damaged") as e:
        read_progress(tmp_path)
    assert str(tmp_path / "progress.json") in str(e.value) and "git checkout" in str(e.value)
    assert "\n" not in str(e.value)


def test_progress_without_the_probes_of_a_finished_run_names_them(tmp_path):
    from memlib.ietagc.runs import checked_progress

    spec = dict(SPEC, probe={"n_samples": 4})
    (tmp_path / "progress.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"lacks the probes \['round-000', 'round-001'\] of run iet-s0"):
        checked_progress("iet-s0", spec, tmp_path)
    (tmp_path / "progress.json").write_text(json.dumps({"round-000": {}, "round-001": {}}))
    assert set(checked_progress("iet-s0", spec, tmp_path)) == {"round-000", "round-001"}
    base = {"baseline": {"steps": 6}, "frontier": [2, 4]}
    with pytest.raises(CheckpointError, match=r"\['step-00002', 'step-00004', 'step-00006'\] of run baseline-s0"):
        checked_progress("baseline-s0", base, tmp_path / "missing")   # no file: nothing recorded
    (tmp_path / "progress.json").write_text(json.dumps({"step-00002": {}}))
    with pytest.raises(CheckpointError, match=r"\['step-00004', 'step-00006'\] of run baseline-s0: .* move .* aside"):
        checked_progress("baseline-s0", base, tmp_path)



def _spec(copies: int) -> dict:
    """SPEC with its own run folder (the digest covers the data)."""
    return dict(SPEC, data=dict(SPEC["data"], copies=copies))


def _edit_training_code(tmp_path, monkeypatch, rel: str = "ietagc/iet.py") -> None:
    """Point memlib's code record at a copy of its source with ``rel`` edited (what a later checkout holds)."""
    import shutil

    from memlib.paths import code_dir

    copy = tmp_path / "memlib"
    shutil.copytree(code_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / rel).write_text((copy / rel).read_text() + "\n# an edit\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(copy))


def test_a_run_records_its_training_code_and_names_the_files_changed_since(tmp_path, monkeypatch):
    from memlib.ietagc.runs import code_changes

    folder = launch("iet-s0", _spec(4), ranks=1)
    assert code_changes(folder) == []
    assert code_changes(tmp_path) is None                         # no record: a run that predates them
    _edit_training_code(tmp_path, monkeypatch)
    assert code_changes(folder) == ["ietagc/iet.py"]
    (folder / "training_code.json").write_text("[]")
    assert code_changes(folder) == ["training_code.json (damaged)"]


def test_a_finished_run_made_by_other_code_is_used_with_a_warning_or_trained_again(tmp_path, monkeypatch, capsys):
    from memlib.ietagc.runs import code_changes
    from memlib.ietagc.study import IETAGCStudyConfig, _launch_all

    spec = _spec(5)
    folder = launch("iet-s0", spec, ranks=1)
    made = (folder / "final" / "meta.json").stat().st_mtime_ns
    _edit_training_code(tmp_path, monkeypatch, "train.py")
    folders, other = _launch_all(IETAGCStudyConfig(ranks=1), {"iet-s0": spec})
    assert other == {"iet-s0": ["train.py"]} and folders["iet-s0"] == folder
    assert "made by other training code" in capsys.readouterr().out
    assert (folder / "final" / "meta.json").stat().st_mtime_ns == made              # used, not retrained
    with pytest.warns(UserWarning, match=r"made by other training code \(train.py\)"):
        _, other = _launch_all(IETAGCStudyConfig(ranks=1, retrain_other_code=True), {"iet-s0": spec})
    assert other == {} and code_changes(folder) == [] and (folder / "final" / "meta.json").exists()
    assert [p for p in folder.parent.iterdir() if p.name.startswith(folder.name + ".corrupt-")]   # the old run, kept


def test_an_unfinished_run_begun_by_other_code_starts_over_instead_of_resuming(tmp_path):
    from memlib.ietagc.runs import code_changes, run_folder

    spec = _spec(6)
    folder = run_folder("iet-s0", spec)
    folder.mkdir(parents=True)
    (folder / "training_code.json").write_text(json.dumps({"ietagc/iet.py": "0" * 64}))
    with pytest.warns(UserWarning, match="begun by other training code"):
        assert launch("iet-s0", spec, ranks=1) == folder
    assert code_changes(folder) == [] and (folder / "final" / "meta.json").exists()
