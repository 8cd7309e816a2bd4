"""memlib.checkpoint: weights round-trip, corrupt or mismatched files are named, writers never collide."""
import pytest
import torch

from memlib.checkpoint import CheckpointError, load_weights, save_checkpoint, verify_checkpoint
from memlib.testbed.model import TextToImageConfig, TextToImageModel


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
