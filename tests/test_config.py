"""Bad inputs a user can give (issue 27): non-finite numbers, huge seeds, misspelt names next to NaN, prompt-file
paths, truncated model files, corrupt checkpoints, long prompts. Each error names the parameter or the file."""
import dataclasses
import logging
import math
import shutil

import pytest

from memlib.config import Config, ConfigError, check_range


@dataclasses.dataclass
class Params(Config):
    scale: float = 3.0
    steps: int = 10
    seed: int = 0


# 4. / 5. non-finite numbers

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected_by_name(bad):
    with pytest.raises(ConfigError, match="'guidance_scale'.*finite"):
        check_range("guidance_scale", bad, 0.0, 50.0)
    with pytest.raises(ConfigError, match="'guidance_scale'.*finite"):
        check_range("guidance_scale", bad)   # no bounds: NaN compares False with any bound
    with pytest.raises(ConfigError, match="'scale'"):
        Params(scale=bad)   # a float field without a range check


def test_unknown_parameter_check_survives_a_nan_papermill_injects():
    from papermill.translators import PythonTranslator

    from memlib.harness.notebook import config_from_notebook, parameters_of

    injected = PythonTranslator.codify({"steps": 4, "scale": math.nan, "stpes": 5})
    assert "float('nan')" in injected
    ns = {"In": ["scale = 3.0\nsteps = 10\nseed = 0\n", injected, "cfg = make(Params, globals())"],
          "scale": math.nan, "steps": 4, "stpes": 5, "seed": 0, "cfg": 1}
    assert set(parameters_of(ns)) == {"scale", "steps", "stpes", "seed"}
    with pytest.raises(ConfigError, match="unknown parameter.*stpes"):
        config_from_notebook(Params, ns)
    ns = {"In": ["scale = 3.0\nsteps = 10\nseed = 0\n", PythonTranslator.codify({"scale": -math.inf})],
          "scale": -math.inf, "steps": 10, "seed": 0}
    with pytest.raises(ConfigError, match="'scale'.*finite"):
        config_from_notebook(Params, ns)


# 7. seeds, prompt files, truncated model files

@pytest.mark.parametrize("seed", [2**70, -1])
def test_seed_out_of_range_names_the_parameter(seed):
    from memlib.generation import GenerationConfig
    from memlib.wen.detect import DetectionConfig

    with pytest.raises(ConfigError, match="'seed'.*out of range"):
        GenerationConfig(seed=seed)
    with pytest.raises(ConfigError, match="'testbed_seed'.*out of range"):
        DetectionConfig.from_params({"testbed_seed": seed})
    GenerationConfig(seed=2**63 - 1)  # the largest accepted: torch and numpy both take it


@pytest.mark.parametrize("spec", ["", "   ", "FOLDER", "FOLDER/missing.jsonl"])
def test_bad_prompt_file_path_names_it(spec, tmp_path):
    from memlib.prompts import PromptFileError, load_prompt_file

    spec = spec.replace("FOLDER", str(tmp_path))
    with pytest.raises(PromptFileError, match="prompt file") as err:
        load_prompt_file(spec)
    assert (spec.strip() and spec in str(err.value)) or "name is empty" in str(err.value)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    return StableDiffusionBackend.tiny_random(seed=0).save_pretrained(tmp_path_factory.mktemp("tiny_sd"))


def test_truncated_text_encoder_weights_name_the_file(sd_dir, tmp_path):
    from memlib.backends.hub import ModelUnavailableError
    from memlib.backends.stable_diffusion import StableDiffusionBackend

    broken = shutil.copytree(sd_dir, tmp_path / "broken")
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelUnavailableError, match="text_encoder/model.safetensors") as err:
        StableDiffusionBackend.from_pretrained(str(broken))
    assert "hf download" not in str(err.value)   # 9: no hub advice for a local folder


def test_local_folder_errors_do_not_suggest_hf_download(sd_dir, tmp_path):
    from memlib.backends.hub import ModelUnavailableError
    from memlib.backends.stable_diffusion import StableDiffusionBackend

    broken = shutil.copytree(sd_dir, tmp_path / "incomplete")
    shutil.rmtree(broken / "unet")
    for where in (broken, tmp_path / "no" / "such" / "folder"):
        with pytest.raises(ModelUnavailableError) as err:
            StableDiffusionBackend.from_pretrained(str(where))
        assert "hf download" not in str(err.value) and "save_pretrained" in str(err.value)
    assert "hf download org/model" in str(ModelUnavailableError("org/model", "not cached"))


# 8. prompt files are read before any model is built

def test_missing_prompt_file_fails_before_the_model_is_built(monkeypatch, tmp_path):
    from memlib.prompts import PromptFileError
    from memlib.wen.detect import DetectionConfig, setup_detection

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the prompt files were read")

    monkeypatch.setattr("memlib.backends.make_backend", no_model)
    cfg = DetectionConfig(backend="tiny-sd", positives_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(PromptFileError, match="missing.jsonl"):
        setup_detection(cfg)


# 6. a corrupt testbed CLIP checkpoint is kept, every time

def test_corrupt_testbed_clip_checkpoint_is_kept_and_rebuilt(tmp_path, monkeypatch):
    from memlib.testbed.build import PRESETS
    from memlib.testbed.clip import ClipConfig, load_or_train_clip
    from memlib.testbed.data import TestbedDataConfig, make_testbed_data

    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path))
    data = make_testbed_data(TestbedDataConfig(seed=0, **PRESETS["tiny"]))
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


# 9. long prompts: memlib's own warning, not transformers' "indexing errors"

def test_long_prompts_warn_once_with_the_number_of_tokens_cut(sd_dir, caplog, capfd):
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    from memlib.tokenizer import ClipBPETokenizer

    long = "a photo of " + "word " * 90   # 93 tokens: 18 cut at 75
    prompts = ["a dog", long, long]
    sd = StableDiffusionBackend.from_pretrained(str(sd_dir))
    for tok in (ClipBPETokenizer(77), sd.tokenizer):
        with caplog.at_level(logging.WARNING), pytest.warns(UserWarning) as rec:
            ids = tok(prompts)
            assert tok.n_tokens(long) == 75 and len(tok.token_ids(long)) == 93
        assert ids.shape == (3, 77)
        msgs = [str(w.message) for w in rec]
        assert len(msgs) == 1 and "2 of 3 prompt(s)" in msgs[0] and "36 token(s) cut" in msgs[0], msgs
    assert "indexing errors" not in caplog.text + "".join(capfd.readouterr())
