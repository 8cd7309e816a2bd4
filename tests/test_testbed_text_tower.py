"""The testbed's frozen text encoder is the testbed CLIP's text tower, converted weight for weight."""
import pytest
import torch

from memlib.testbed.clip import ClipConfig, load_or_train_clip, make_clip
from memlib.config import ConfigError
from memlib.testbed.model import TextToImageConfig, TextToImageModel
from memlib.testbed.text_tower import load_clip_text_tower, open_clip_token_rows
from memlib.testbed.build import TestbedRef, text_tower_clip_config

PROMPTS = ["a small red circle at the top left zorvex", "", "green"]


def _perturbed_clip(cfg: ClipConfig):
    clip = make_clip(cfg).eval()
    with torch.no_grad():  # move every weight off its initial value, so a missed or swapped copy shows
        for p in clip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return clip


def test_converted_encoder_reproduces_the_open_clip_text_tower_and_is_frozen():
    torch.manual_seed(0)
    clip = _perturbed_clip(ClipConfig())
    model = TextToImageModel(TextToImageConfig())
    ids = model.tokenizer(PROMPTS)
    assert not torch.allclose(model.encode(ids), open_clip_token_rows(clip, ids), atol=1e-2)
    load_clip_text_tower(model.text_encoder, clip)
    torch.testing.assert_close(model.encode(ids), open_clip_token_rows(clip, ids), atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert any(p.requires_grad for p in model.unet.parameters())


def test_mismatched_architectures_are_refused_with_advice():
    clip = make_clip(ClipConfig())
    model = TextToImageModel(TextToImageConfig(text_layers=1))
    with pytest.raises(ValueError, match="does not match.*ClipConfig"):
        load_clip_text_tower(model.text_encoder, clip)
    with pytest.raises(ConfigError, match="text_heads = 4"):
        text_tower_clip_config(TextToImageConfig(text_heads=8), seed=0)


def test_default_text_tower_clip_is_notebook_00s_evaluation_clip():
    nb = TestbedRef()
    assert text_tower_clip_config(nb.model_config(), nb.seed) == nb.clip_config()


def test_trained_testbed_conditions_on_its_clip_text_tower(tiny_testbed):
    clip = load_or_train_clip(tiny_testbed.data, text_tower_clip_config(tiny_testbed.model.cfg, seed=0),
                              tiny_testbed.meta["data_fingerprint"], progress=False)
    assert tiny_testbed.meta["text_encoder_from"] == clip.meta["sha256"]
    ids = tiny_testbed.model.tokenizer(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(tiny_testbed.model.encode(ids), open_clip_token_rows(clip.model, ids),
                                   atol=1e-5, rtol=1e-5)
