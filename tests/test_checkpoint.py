
import pytest
import torch

from memlib.checkpoint import CheckpointError, load_weights, save_checkpoint, verify_checkpoint
from memlib.config import ConfigError
from memlib.harness.notebook import config_from_notebook
from memlib.testbed.model import TextToImageConfig, TextToImageModel
from memlib.testbed.build import TestbedRef, load_or_train
from memlib.testbed.evaluate import TestbedNotebookConfig
from memlib.train import TrainConfig


def test_checkpoint_round_trip(tmp_path):
    m = TextToImageModel(TextToImageConfig())
    save_checkpoint(tmp_path / "ck", m, {"model_config": m.cfg.to_dict()})
    m2 = TextToImageModel(TextToImageConfig())
    load_weights(tmp_path / "ck", m2)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_corrupt_and_truncated_checkpoints_are_detected(tmp_path):
    m = TextToImageModel(TextToImageConfig())
    folder = save_checkpoint(tmp_path / "ck", m, {})
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        verify_checkpoint(folder)
    w.write_bytes(bytes(data[:1000]))
    with pytest.raises(CheckpointError, match="rebuild"):
        load_weights(folder, m)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        verify_checkpoint(tmp_path / "missing")


def test_checkpoint_for_another_model_config_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ck", TextToImageModel(TextToImageConfig()), {"model_config": "small"})
    other = TextToImageModel(TextToImageConfig(block_out_channels=(16, 32), cross_attention_dim=32))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(tmp_path / "ck", other)


def test_temporary_folders_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    host = socket.gethostname().replace("-", "_")
    stale = tmp_path / f"ck.tmp-{host}-{dead}-deadbeef"
    live = tmp_path / f"ck.tmp-{host}-{os.getpid()}-0123abcd"   # a save in progress elsewhere in this process
    only_copy = tmp_path / f"gone.old-{host}-{dead}-deadbeef"   # its writer died between its two renames
    for d in (stale, live, only_copy):
        d.mkdir()
    m = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "ck", m, {})
    save_checkpoint(tmp_path / "gone", m, {})  # the sweep at its start finds no checkpoint: the copy stays
    assert not stale.exists() and live.exists() and only_copy.exists()
    verify_checkpoint(tmp_path / "ck")


def test_interrupted_training_resumes_to_the_same_weights():
    cfg = TestbedRef(preset="tiny", train_steps=4, batch_size=4, clip_steps=2, seed=3)
    args = (cfg.data_config(), cfg.model_config(), TrainConfig(steps=4, batch_size=4, seed=3, checkpoint_every=2))
    part = load_or_train(*args, progress=False, stop_at=2)
    assert part.train_state["step"] == 2
    resumed = load_or_train(*args, progress=False)
    assert resumed.train_state["step"] == 4
    straight = load_or_train(*args, retrain=True, progress=False)
    for k, v in resumed.model.state_dict().items():
        assert torch.allclose(v, straight.model.state_dict()[k], atol=1e-6), k


def test_testbed_checkpoint_stores_the_unet_and_reloads_the_encoder_from_its_clip():
    cfg = TestbedRef(preset="tiny", train_steps=2, batch_size=4, clip_steps=2, seed=5)
    trained = cfg.load(progress=False)
    assert trained.meta["part"] == "unet" and trained.meta["text_encoder_from"]
    from safetensors.torch import load_file
    stored = load_file(str(trained.folder / "model.safetensors"))
    assert set(stored) == set(trained.model.unet.state_dict())  # no text-encoder tensor is stored twice
    loaded = cfg.load(progress=False)
    assert loaded.train_state is None  # loaded, not trained again
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k


def test_corrupt_checkpoint_is_rebuilt_with_a_warning():
    cfg = TestbedRef(preset="tiny", train_steps=2, batch_size=4, clip_steps=2, seed=4)
    args = (cfg.data_config(), cfg.model_config(), cfg.train_config())
    tb = load_or_train(*args, progress=False)
    (tb.folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = load_or_train(*args, progress=False)
    verify_checkpoint(again.folder)


def test_notebook_config_rejects_unknown_and_mistyped_parameters():
    ok = config_from_notebook(TestbedNotebookConfig, {"seed": 1, "In": [], "np": __import__("numpy")})
    assert ok.seed == 1
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['num_step'\]"):
        config_from_notebook(TestbedNotebookConfig, {"num_step": 5})
    with pytest.raises(ConfigError, match="'n_gens'.*must be an integer"):
        TestbedNotebookConfig(n_gens="4")
    with pytest.raises(ConfigError, match="'guidance_scale'.*out of range"):
        TestbedNotebookConfig(guidance_scale=-1.0)
    with pytest.raises(ConfigError, match="'testbed_preset'.*choose one of"):
        TestbedNotebookConfig.from_params({"testbed_preset": "huge"})
    with pytest.raises(ConfigError, match="'retrain'.*must be bool"):
        TestbedNotebookConfig(retrain="yes")


def test_parameters_are_the_literal_assignment_cells_under_ipython():
    from memlib.harness.notebook import parameters_of

    ns = {"In": ["", "seed = 1  # c\nsteps = -2", "# Parameters\nseed = 5\nbogus = 'x'\n",
                 "from memlib import x\ncfg = make(globals())", "NB = '00'\nt = time.time()"],
          "seed": 5, "steps": -2, "bogus": "x", "cfg": object(), "NB": "00", "t": 1.0}
    assert parameters_of(ns) == {"seed": 5, "steps": -2, "bogus": "x"}


@pytest.mark.parametrize("cls_path, bad, pattern", [
    ("memlib.wen.detect:DetectionConfig", {"max_gens": 1}, "'max_gens'.*out of range"),
    ("memlib.wen.detect:DetectionConfig", {"num_steps": 5}, "'num_steps'.*out of range"),
    ("memlib.wen.detect:DetectionConfig", {"memorized_threshold": "high"}, "'memorized_threshold'.*number"),
    ("memlib.wen.detect:DetectionConfig", {"backend_id": "x"}, r"unknown parameter\(s\) \['backend_id'\]"),
    ("memlib.wen.explain:ExplainConfig", {"attribution_steps": 80}, "'attribution_steps'.*out of range"),
    ("memlib.wen.explain:ExplainConfig", {"interactive": 1}, "'interactive'.*must be bool"),
    ("memlib.wen.explain:ExplainConfig", {"n_gen": 4}, r"unknown parameter\(s\) \['n_gen'\]"),
    ("memlib.testbed.evaluate:TestbedNotebookConfig", {"testbed_train_steps": 0}, "'testbed_train_steps'.*out of range"),
])
def test_every_notebook_config_rejects_bad_values(cls_path, bad, pattern):
    import importlib

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    with pytest.raises(ConfigError, match=pattern):
        cls.from_params(bad)


def test_detection_positive_groups_are_validated():
    from types import SimpleNamespace

    import numpy as np

    from memlib.wen.detect import DetectionConfig, PromptSet, _choose_positives

    with pytest.raises(ConfigError, match="positive_groups"):
        DetectionConfig(positive_groups="verbatim,bogus")
    with pytest.raises(ConfigError, match="positive_groups"):
        DetectionConfig(positive_groups="verbatim_knob")   # a dose group, not a planted positive
    sets = {g: PromptSet(g, "positive", ["p"], ["text:p"]) for g in ("verbatim", "image_dup", "caption_dup")}
    setup = SimpleNamespace(names=lambda role: list(sets), notes=[], seed=3)
    cfg = DetectionConfig(positive_groups="verbatim, caption_dup")
    assert _choose_positives(cfg, setup, {}) == ["verbatim", "caption_dup"]
    measured = DetectionConfig()
    rep = {"verbatim": np.array([1.0, 1.0]), "image_dup": np.array([0.4, 0.4]), "caption_dup": np.array([0.5, 0.5])}
    assert _choose_positives(measured, setup, rep) == ["verbatim", "caption_dup"]
    assert any("seed 3, image_dup: replication 40%" in n and "NOT memorized" in n for n in setup.notes)
    with pytest.raises(RuntimeError, match="no planted group"):
        _choose_positives(measured, setup, {g: np.zeros(2) for g in sets})
