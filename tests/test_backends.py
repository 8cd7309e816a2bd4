"""memlib.backends on tiny random-weight models: the real diffusers/transformers loading code, offline; a broken
or missing model folder is named without hub advice; long prompts warn once."""
import json
import logging
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


def test_tiny_sd_round_trip(tiny_sd, tiny_sd_folder):
    index = json.loads((tiny_sd_folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["tokenizer"][1] == "CLIPTokenizer"
    loaded = StableDiffusionBackend.from_pretrained(str(tiny_sd_folder))
    assert isinstance(loaded, Backend)
    assert loaded.sample_shape == tiny_sd.sample_shape == (4, 8, 8) and loaded.image_shape == (3, 64, 64)
    assert torch.equal(loaded.tokenizer(PROMPTS), tiny_sd.tokenizer(PROMPTS))
    e1, e2 = tiny_sd.encode_prompts(PROMPTS[:2]), loaded.encode_prompts(PROMPTS[:2])
    assert e1.shape == (2, 77, 16) and torch.allclose(e1, e2)
    x, t = torch.randn(2, *tiny_sd.sample_shape), torch.tensor(981)
    with torch.no_grad():
        assert torch.allclose(tiny_sd.eps(x, t, e1), loaded.eps(x, t, e2), atol=1e-6)
    assert loaded.device == torch.device("cpu") and loaded.name == str(tiny_sd_folder)


def test_tokenizer_ids_match_clip_bpe(tiny_sd):
    ref = ClipBPETokenizer(77)
    ids = tiny_sd.tokenizer(PROMPTS)
    assert torch.equal(ids, ref(PROMPTS))
    assert ids[0, 0] == BOS and (ids[0, 1:] == EOS).all()  # "" -> BOS, EOS, EOS, ...
    for p in PROMPTS:
        assert tiny_sd.tokenizer.token_strings(p) == ref.token_strings(p)
        assert tiny_sd.tokenizer.n_tokens(p) == ref.n_tokens(p)
    assert tiny_sd.tokenizer.n_tokens(PROMPTS[-1]) == 75
    assert tiny_sd.tokenizer([]).shape == ref([]).shape == (0, 77)
    assert tiny_sd.tokenizer.decode(tiny_sd.tokenizer.token_ids("a cute dog")) == "a cute dog"


def test_sample_with_cfg_and_decode(tiny_sd):
    cond, uncond = tiny_sd.encode_prompts(["a photo of a cute dog", "a cat"]), tiny_sd.encode_prompts([""])
    x_T = seeded_noise(tiny_sd.sample_shape, [0, 1])
    x0 = sample(tiny_sd.eps, x_T, tiny_sd.scheduler("ddim"), num_steps=2, cond=cond, uncond=uncond,
                guidance_scale=7.5)
    img = tiny_sd.decode(x0)
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


def test_scheduler_is_forced_to_sd_settings(tiny_sd):
    ddim = tiny_sd.scheduler("ddim")  # built from a PNDM config, as SD v1.4 ships it
    assert type(ddim).__name__ == "DDIMScheduler"
    assert not ddim.config.clip_sample and not ddim.config.set_alpha_to_one
    ddim.set_timesteps(50)
    assert ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1
    assert type(tiny_sd.scheduler("ddpm")).__name__ == "DDPMScheduler"
    with pytest.raises(ValueError, match="ddim"):
        tiny_sd.scheduler("euler")


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


def test_missing_folder_and_incomplete_folder(tiny_sd_folder, tmp_path):
    with pytest.raises(ModelUnavailableError, match="neither an existing folder"):
        StableDiffusionBackend.from_pretrained(str(tmp_path / "no" / "such" / "model"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_folder, broken)
    shutil.rmtree(broken / "tokenizer")  # transformers 5 would silently build a 3-token tokenizer
    with pytest.raises(ModelUnavailableError, match="incomplete"):
        StableDiffusionBackend.from_pretrained(str(broken))


def test_fp16_on_cpu_refused(tiny_sd_folder):
    with pytest.raises(ValueError, match="float16 on CPU"):
        StableDiffusionBackend.from_pretrained(str(tiny_sd_folder), device="cpu", dtype=torch.float16)
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


def test_load_backend_kinds(tiny_sd_folder):
    assert isinstance(load_backend(str(tiny_sd_folder)), StableDiffusionBackend)
    with pytest.raises(ValueError, match="testbed"):
        load_backend("testbed")
    with pytest.raises(ValueError, match="unknown model kind"):
        load_backend(str(tiny_sd_folder), kind="gan")


def test_input_embedding_gradient_and_row_swaps_on_stable_diffusion(tiny_sd):
    from memlib.wen.rows import RowSwapBackend
    from memlib.wen.attribution import input_embedding_significance
    from memlib.generation import GenerationConfig

    prompt = PROMPTS[2]
    a = input_embedding_significance(tiny_sd, prompt, GenerationConfig(num_steps=5, n_gens=1))
    assert len(a.tokens) == tiny_sd.tokenizer.n_tokens(prompt) == len(a.significance)
    assert (a.significance > 0).all() and a.magnitude > 0
    with torch.no_grad():
        e, u = tiny_sd.encode_prompts([prompt]), tiny_sd.encode_prompts([""])
        swapped = RowSwapBackend(tiny_sd, "padding").encode_prompts([prompt])
    n = tiny_sd.tokenizer.n_tokens(prompt)
    assert torch.equal(swapped[0, :n + 1], e[0, :n + 1]) and torch.equal(swapped[0, n + 1:], u[0, n + 1:])


def test_truncated_text_encoder_weights_name_the_file(tiny_sd_folder, tmp_path):
    broken = shutil.copytree(tiny_sd_folder, tmp_path / "broken")
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelUnavailableError, match="text_encoder/model.safetensors") as err:
        StableDiffusionBackend.from_pretrained(str(broken))
    assert "hf download" not in str(err.value)   # 9: no hub advice for a local folder


def test_local_folder_errors_do_not_suggest_hf_download(tiny_sd_folder, tmp_path):
    broken = shutil.copytree(tiny_sd_folder, tmp_path / "incomplete")
    shutil.rmtree(broken / "unet")
    for where in (broken, tmp_path / "no" / "such" / "folder"):
        with pytest.raises(ModelUnavailableError) as err:
            StableDiffusionBackend.from_pretrained(str(where))
        assert "hf download" not in str(err.value) and "save_pretrained" in str(err.value)
    assert "hf download org/model" in str(ModelUnavailableError("org/model", "not cached"))


def test_long_prompts_warn_once_with_the_number_of_tokens_cut(tiny_sd_folder, caplog, capfd):
    long = "a photo of " + "word " * 90   # 93 tokens: 18 cut at 75
    prompts = ["a dog", long, long]
    loaded = StableDiffusionBackend.from_pretrained(str(tiny_sd_folder))
    for tok in (ClipBPETokenizer(77), loaded.tokenizer):
        with caplog.at_level(logging.WARNING), pytest.warns(UserWarning) as rec:
            ids = tok(prompts)
            assert tok.n_tokens(long) == 75 and len(tok.token_ids(long)) == 93
        assert ids.shape == (3, 77)
        msgs = [str(w.message) for w in rec]
        assert len(msgs) == 1 and "2 of 3 prompt(s)" in msgs[0] and "36 token(s) cut" in msgs[0], msgs
    assert "indexing errors" not in caplog.text + "".join(capfd.readouterr())
