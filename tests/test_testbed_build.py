"""memlib.testbed.build: training resumes to the same weights (after stop_at or a signal), a testbed checkpoint
holds its UNet only, and a corrupt checkpoint (the UNet's or its CLIP's) is kept aside and rebuilt."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from memlib.checkpoint import verify_checkpoint
from memlib.testbed.build import TestbedRef, load_or_train
from memlib.testbed.model import TextToImageConfig
from memlib.train import TrainConfig


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


def test_corrupt_testbed_clip_checkpoint_is_kept_and_rebuilt(tiny_data, tmp_path, monkeypatch):
    from memlib.testbed.clip import ClipConfig, load_or_train_clip

    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path))
    data = tiny_data
    cfg = ClipConfig(steps=2, batch_size=4)
    load_or_train_clip(data, cfg, "fp", progress=False)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("clip-")]
    for n in (1, 2):
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        with pytest.warns(UserWarning, match="kept it as"):
            load_or_train_clip(data, cfg, "fp", progress=False)
        kept = sorted(tmp_path.glob(f"{folder.name}.corrupt*"))
        assert len(kept) == n, kept   # the earlier copy is still there
        assert all(len((k / "model.safetensors").read_bytes()) == 100 for k in kept)
    load_or_train_clip(data, cfg, "fp", progress=False)   # the rebuilt one loads


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


@pytest.mark.slow
def test_training_killed_by_a_signal_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from memlib.testbed.build import checkpoint_folder

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
