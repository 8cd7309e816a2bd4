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

