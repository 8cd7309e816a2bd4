"""Real-model backends on tiny random-weight models: the real diffusers/transformers loading code, offline."""
import json
import shutil
import socket
import time

import pytest
import torch

from memlib.backends.base import Backend
from memlib.backends import load_backend
from memlib.backends.ddpm import DDPMBackend
from memlib.backends.hub import ModelUnavailableError, _hub_reachable
from memlib.backends.stable_diffusion import StableDiffusionBackend
from memlib.sampling import sample, seeded_noise
from memlib.tokenizer import BOS, EOS, ClipBPETokenizer

UNCACHED = "memlib-tests/definitely-not-a-cached-model-3f9a"
PROMPTS = ["", "a photo of a cute dog", "Emma Watson to play Belle in Disney's <i>Beauty and the Beast</i>",
           "Café naïve 小红花 \"quoted\" 1985!! " + "word " * 100]  # the last one is truncated at 77 tokens


@pytest.fixture(scope="module")
def sd():
    return StableDiffusionBackend.tiny_random(seed=0)


@pytest.fixture(scope="module")
def sd_dir(sd, tmp_path_factory):
    return sd.save_pretrained(tmp_path_factory.mktemp("tiny_sd"))


def test_tiny_sd_round_trip(sd, sd_dir):
    index = json.loads((sd_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["tokenizer"][1] == "CLIPTokenizer"
    loaded = StableDiffusionBackend.from_pretrained(str(sd_dir))
    assert isinstance(loaded, Backend)
    assert loaded.sample_shape == sd.sample_shape == (4, 8, 8) and loaded.image_shape == (3, 64, 64)
    assert torch.equal(loaded.tokenizer(PROMPTS), sd.tokenizer(PROMPTS))
    e1, e2 = sd.encode_prompts(PROMPTS[:2]), loaded.encode_prompts(PROMPTS[:2])
    assert e1.shape == (2, 77, 16) and torch.allclose(e1, e2)
    x, t = torch.randn(2, *sd.sample_shape), torch.tensor(981)
    with torch.no_grad():
        assert torch.allclose(sd.eps(x, t, e1), loaded.eps(x, t, e2), atol=1e-6)
    assert loaded.device == torch.device("cpu") and loaded.name == str(sd_dir)


def test_tokenizer_ids_match_clip_bpe(sd):
    ref = ClipBPETokenizer(77)
    ids = sd.tokenizer(PROMPTS)
    assert torch.equal(ids, ref(PROMPTS))
    assert ids[0, 0] == BOS and (ids[0, 1:] == EOS).all()  # "" -> BOS, EOS, EOS, ...
    for p in PROMPTS:
        assert sd.tokenizer.token_strings(p) == ref.token_strings(p)
        assert sd.tokenizer.n_tokens(p) == ref.n_tokens(p)
    assert sd.tokenizer.n_tokens(PROMPTS[-1]) == 75
    assert sd.tokenizer([]).shape == ref([]).shape == (0, 77)
    assert sd.tokenizer.decode(sd.tokenizer.token_ids("a cute dog")) == "a cute dog"


def test_sample_with_cfg_and_decode(sd):
    cond, uncond = sd.encode_prompts(["a photo of a cute dog", "a cat"]), sd.encode_prompts([""])
    x_T = seeded_noise(sd.sample_shape, [0, 1])
    x0 = sample(sd.eps, x_T, sd.scheduler("ddim"), num_steps=2, cond=cond, uncond=uncond, guidance_scale=7.5)
    img = sd.decode(x0)
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


def test_scheduler_is_forced_to_sd_settings(sd):
    ddim = sd.scheduler("ddim")  # built from a PNDM config, as SD v1.4 ships it
    assert type(ddim).__name__ == "DDIMScheduler"
    assert not ddim.config.clip_sample and not ddim.config.set_alpha_to_one
    ddim.set_timesteps(50)
    assert ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1
    assert type(sd.scheduler("ddpm")).__name__ == "DDPMScheduler"
    with pytest.raises(ValueError, match="ddim"):
        sd.scheduler("euler")


def test_uncached_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=UNCACHED) as err:
        StableDiffusionBackend.from_pretrained(UNCACHED)
    assert time.monotonic() - start < 10
    assert "HF_HUB_OFFLINE" in str(err.value) and "save_pretrained" in str(err.value)
    assert err.value.model_id == UNCACHED


def test_uncached_id_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("memlib.backends.hub._hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=UNCACHED):
        load_backend(UNCACHED)
    with pytest.raises(ModelUnavailableError, match="local_files_only=True"):
        DDPMBackend.from_pretrained(UNCACHED, local_files_only=True)
    assert time.monotonic() - start < 10


def test_hub_probe_is_bounded(monkeypatch):
    def hang(*args, **kwargs):  # a DNS lookup / connect that hangs, then fails
        time.sleep(5)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert _hub_reachable(timeout=0.3) is False
    assert time.monotonic() - start < 2


def test_missing_folder_and_incomplete_folder(sd_dir, tmp_path):
    with pytest.raises(ModelUnavailableError, match="neither an existing folder"):
        StableDiffusionBackend.from_pretrained(str(tmp_path / "no" / "such" / "model"))
    broken = tmp_path / "broken"
    shutil.copytree(sd_dir, broken)
    shutil.rmtree(broken / "tokenizer")  # transformers 5 would silently build a 3-token tokenizer
    with pytest.raises(ModelUnavailableError, match="incomplete"):
        StableDiffusionBackend.from_pretrained(str(broken))


def test_fp16_on_cpu_refused(sd_dir):
    with pytest.raises(ValueError, match="float16 on CPU"):
        StableDiffusionBackend.from_pretrained(str(sd_dir), device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="float16 on CPU"):
        DDPMBackend.from_pretrained(UNCACHED, dtype=torch.float16)


def test_ddpm_round_trip_and_sampling(tmp_path):
    ddpm = DDPMBackend.tiny_random(seed=1)
    loaded = load_backend(str(ddpm.save_pretrained(tmp_path / "ddpm")))
    assert isinstance(loaded, DDPMBackend) and isinstance(loaded, Backend)
    assert loaded.sample_shape == (3, 8, 8)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor(500)
    with torch.no_grad():
        assert torch.allclose(ddpm.eps(x, t), loaded.eps(x, t, None), atol=1e-6)
    for kind in ("ddim", "ddpm"):
        img = loaded.decode(sample(loaded.eps, seeded_noise(loaded.sample_shape, [0]), loaded.scheduler(kind), 2))
        assert img.shape == (1, 3, 8, 8) and img.min() >= 0 and img.max() <= 1
    with pytest.raises(NotImplementedError, match="unconditional"):
        loaded.encode_prompts(["a dog"])
    with pytest.raises(ValueError, match="unconditional"):
        loaded.eps(x, t, torch.zeros(2, 4, 16))


def test_ddpm_flat_hub_layout(tmp_path):
    # Early google/ddpm-* revisions keep config.json and scheduler_config.json at the repo root.
    from diffusers import DDPMScheduler
    ddpm = DDPMBackend.tiny_random()
    ddpm.unet.save_pretrained(tmp_path)
    DDPMScheduler.from_config(ddpm.scheduler_config).save_config(tmp_path)
    loaded = DDPMBackend.from_pretrained(str(tmp_path))
    assert loaded.scheduler("ddpm").config.clip_sample  # the repo's own settings are kept for DDPMs


def test_v_prediction_is_converted_to_eps():
    ddpm = DDPMBackend.tiny_random()
    v_model = DDPMBackend(ddpm.unet, {**ddpm.scheduler_config, "prediction_type": "v_prediction"})
    x, t = torch.randn(1, 3, 8, 8), torch.tensor(300)
    a = ddpm.scheduler("ddpm").alphas_cumprod[300]
    with torch.no_grad():
        assert torch.allclose(v_model.eps(x, t), a.sqrt() * ddpm.eps(x, t) + (1 - a).sqrt() * x, atol=1e-6)
    assert v_model.scheduler().config.prediction_type == "epsilon"


def test_load_backend_kinds(sd_dir):
    assert isinstance(load_backend(str(sd_dir)), StableDiffusionBackend)
    with pytest.raises(ValueError, match="testbed"):
        load_backend("testbed")
    with pytest.raises(ValueError, match="unknown model kind"):
        load_backend(str(sd_dir), kind="gan")


def test_input_embedding_gradient_and_row_swaps_on_stable_diffusion(sd):
    from memlib.wen.rows import RowSwapBackend
    from memlib.wen.attribution import input_embedding_significance
    from memlib.generation import GenerationConfig

    prompt = PROMPTS[2]
    a = input_embedding_significance(sd, prompt, GenerationConfig(num_steps=5, n_gens=1))
    assert len(a.tokens) == sd.tokenizer.n_tokens(prompt) == len(a.significance)
    assert (a.significance > 0).all() and a.magnitude > 0
    with torch.no_grad():
        e, u = sd.encode_prompts([prompt]), sd.encode_prompts([""])
        swapped = RowSwapBackend(sd, "padding").encode_prompts([prompt])
    n = sd.tokenizer.n_tokens(prompt)
    assert torch.equal(swapped[0, :n + 1], e[0, :n + 1]) and torch.equal(swapped[0, n + 1:], u[0, n + 1:])
