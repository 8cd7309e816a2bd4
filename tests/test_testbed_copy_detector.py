"""memlib.testbed.copy_detector and notebook 00's check of it: the shipped detectors (found under the current
recipes' names, small, calibrated), a shipped detector seeing copies through speckle and blur where the pixel Gu
ratio does not, the perturbations, and the tiny pipeline end to end."""
import json

import numpy as np
import pytest
import torch

from memlib.copydetect import CopyDetector
from memlib.metrics import ReplicationIndex
from memlib.paths import repo_root
from memlib.testbed.build import TestbedRef
from memlib.testbed.copy_detector import (RECIPES, digits_detector_folder, heldout_texts, load_testbed_detector,
                                          detector_folder, unique_rows)
from memlib.testbed.copy_detector_eval import PERTURBATIONS, perturb, robustness

SHIPPED = repo_root() / "checkpoints"


def shipped(folder) -> CopyDetector:
    """The shipped detector a loader would look for under ``folder``'s name (tests keep checkpoints elsewhere)."""
    path = SHIPPED / folder.name
    assert path.is_dir(), f"no shipped detector {path.name}: run `python -m memlib.testbed.copy_detector`"
    return CopyDetector.load(path)


@pytest.mark.parametrize("which", ["testbed", "digits"])
def test_the_shipped_detectors_are_small_float16_and_calibrated(which):
    folder = detector_folder(TestbedRef()) if which == "testbed" else digits_detector_folder()
    det = shipped(folder)
    files = list((SHIPPED / folder.name).iterdir())
    assert sum(f.stat().st_size for f in files) < 1_000_000, [(f.name, f.stat().st_size) for f in files]
    meta = json.loads((SHIPPED / folder.name / "meta.json").read_text())
    assert meta["stored_dtype"] == "float16" and meta["step"] == meta["recipe"]["train_steps"]
    cal = det.trained_on["calibration"]
    assert cal["max_false_rate"] == 0.05 and all(r <= 0.05 for r in cal["false_copy_rates"]["dev"].values())
    assert det.trained_on["dataset"] == which and 0 < det.threshold < 1


def _planted(data, n=6):
    first = unique_rows(data.cluster)
    rows = first[data.group[first] == "verbatim"][:n]
    return data.images[rows], data.cluster[rows]


def test_the_shipped_detector_sees_copies_through_speckle_and_blur_where_the_pixel_gu_ratio_does_not():
    from memlib.testbed.data import make_testbed_data

    det = shipped(detector_folder(TestbedRef()))
    data = make_testbed_data(TestbedRef().data_config())
    images, clusters = _planted(data)
    refs, index = det.embed(data.images), ReplicationIndex(data.images, data.cluster)
    for kind, level in (("speckle", 0.4), ("blur", 1.0), ("gaussian_noise", 0.4)):
        x = perturb(images, kind, level)
        nn, sim = det.nearest(x, refs)
        assert ((sim > det.threshold) & (data.cluster[nn] == clusters)).all(), (kind, sim)
        assert not index.query(x).replicated(clusters).any(), kind


def test_perturb_shifts_with_the_edge_repeated_and_leaves_level_zero_alone():
    x = torch.linspace(-1, 1, 2 * 3 * 5 * 5).view(2, 3, 5, 5)
    out = perturb(x, "shift", 1)
    assert torch.equal(out[0, :, :, 1:], x[0, :, :, :-1]) and torch.equal(out[0, :, :, 0], x[0, :, :, 0])  # right
    assert torch.equal(out[1, :, 1:], x[1, :, :-1]) and torch.equal(out[1, :, 0], x[1, :, 0])              # down
    for kind in PERTURBATIONS:
        assert torch.allclose(perturb(x, kind, 0), x, atol=1e-6), kind
    assert torch.equal(perturb(x, "speckle", 0.3, seed=1), perturb(x, "speckle", 0.3, seed=1))
    assert (perturb(x, "speckle", 0.3) - x).abs().max() <= 0.3 + 1e-6
    with pytest.raises(ValueError, match="perturbation 'jpeg'"):
        perturb(x, "jpeg", 1)


@pytest.mark.slow
def test_the_tiny_detector_trains_calibrates_reloads_and_measures_robustness(tiny_testbed):
    ref = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)
    det = load_testbed_detector(ref, progress=False)
    cal = det.trained_on["calibration"]
    assert all(r <= 0.05 for r in cal["false_copy_rates"]["dev"].values())
    recipe = RECIPES["tiny"]
    dev = heldout_texts(tiny_testbed.data, "dev")
    assert cal["n_negatives"]["dev"] == {"generations": len(dev) * recipe.calib_gens,
                                         "renders": len(dev) * recipe.renders_per_caption}
    assert det.trained_on["checkpoint"] == tiny_testbed.folder.name
    again = load_testbed_detector(ref, progress=False)      # loaded, not trained again
    assert (again.sha256, again.threshold) == (det.sha256, det.threshold)
    rob = robustness(det, tiny_testbed)
    for kind, (levels, _) in PERTURBATIONS.items():
        curves = rob[kind]
        assert curves["levels"] == list(levels)
        assert curves["pixel_gu"][0] == 1.0    # an unperturbed training image copies itself
        assert all(0 <= v <= 1 for k in ("detector", "pixel_gu", "lowpass_gu") for v in curves[k])
    data = tiny_testbed.data
    assert rob["n_images"] == np.unique(data.cluster[data.group != "generic"]).size


def test_a_checkpoints_folder_without_the_detector_gets_the_shipped_copy_not_a_retrain(tmp_path, monkeypatch):
    import memlib.testbed.copy_detector as cd

    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr(cd, "train_descriptor", lambda *a, **k: pytest.fail("the shipped detector was trained again"))
    det = cd.load_digits_detector(progress=False)
    assert det.threshold == shipped(cd.digits_detector_folder()).threshold
    assert (tmp_path / cd.digits_detector_folder().name / "model.safetensors").is_file()
