"""``benchmarks/sd_scale.py``: the tiny configuration end to end on the CPU, SD-v1's architecture by parameter
count, the batch chosen from (mocked) free GPU memory, and half precision refused on the CPU."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sd_scale.py"


@pytest.fixture(scope="module")
def sd_scale():
    spec = importlib.util.spec_from_file_location("sd_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The tiny models gain nothing from threads, and shared cores punish them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_tiny_configuration_writes_a_results_file_and_its_table(sd_scale, tmp_path, one_thread, capsys):
    out = tmp_path / "sd_scale-cpu.json"
    assert sd_scale.main(["--size", "tiny", "--device", "cpu", "--steps", "2", "--prompts", "4", "--images", "2",
                          "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["size"], r["dtype"], r["steps"]) == ("tiny", "fp32", 2) and r["device"].startswith("cpu")
    assert set(r["parameters"]) == {"unet", "text_encoder", "vae"} and r["not_measured"] == []
    d = r["detection"]
    assert d["prompts"] == 4 and d["finite_scores"] == 4 and d["batched_prompts_per_s"] > 0
    assert d["max_relative_score_difference"] < 1e-4   # batched memlib and the per-prompt loop: the same d(p)
    assert d["speedup"] == pytest.approx(d["loop_s"] / d["batched_s"])
    for name in ("cfg", "wen_pe", "amg", "prss"):
        arm = r["arms"][name]
        assert arm["images"] == 2 and arm["seconds_per_image"] > 0 and arm["peak_memory_gb"] > 0
        assert arm["relative_to_cfg"] == pytest.approx(arm["seconds_per_image"] / r["arms"]["cfg"]["seconds_per_image"])
    assert r["arms"]["cfg"]["model_evals_per_image"] == 4            # 2 steps x (conditional + unconditional)
    assert r["arms"]["amg"]["acted"] == 2 and r["arms"]["prss"]["acted"] == 2 and r["arms"]["wen_pe"]["acted"] == 2
    assert "scope testbed" in r["arms"]["amg"]["how"] and "scope testbed" in r["arms"]["prss"]["how"]
    t = r["targets"]
    assert t["applies"] is False and t["amg_relative_to_cfg"]["met"] is None   # judged on an H100 only
    table = (tmp_path / "sd_scale.md").read_text()
    assert table.count("\n| cpu:") == 1 and "| tiny | fp32 |" in table and "n/a (not one H100" in table


def test_the_sd_v1_configuration_has_sd_v1s_parameters(sd_scale):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    with torch.device("meta"):   # shapes only, no memory
        parts = (UNet2DConditionModel(**sd_scale.SD_V1_UNET), CLIPTextModel(CLIPTextConfig(**sd_scale.CLIP_L14_TEXT)),
                 AutoencoderKL(**sd_scale.SD_V1_VAE))
    counts = [sum(p.numel() for p in m.parameters()) for m in parts]
    assert counts == [859_520_964, 123_060_480, 83_653_863]   # CompVis/stable-diffusion-v1-4's unet, text, vae


@pytest.mark.parametrize("free_gb, cfg, amg", [(80, 37, 4), (8, 3, 1), (0.2, 1, 1), (4000, 64, 8)])
def test_the_batch_comes_from_free_gpu_memory(sd_scale, monkeypatch, free_gb, cfg, amg):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gb * 1e9), int(80e9)))
    sd = SimpleNamespace(sample_shape=(4, 64, 64), device=torch.device("cuda"))   # SD-v1 latents, 0.5 GB per image
    assert sd_scale.choose_batch(sd, "detection") == sd_scale.choose_batch(sd, "cfg") == cfg
    assert sd_scale.choose_batch(sd, "amg") == amg and sd_scale.choose_batch(sd, "wen_pe") == amg


def test_half_precision_on_the_cpu_is_refused_in_one_line_before_any_model(sd_scale, monkeypatch, capsys):
    monkeypatch.setattr(sd_scale, "build", lambda *a: pytest.fail("a model was built"))
    for dtype in ("fp16", "bf16"):
        assert sd_scale.main(["--device", "cpu", "--dtype", dtype]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"dtype {dtype} on the CPU is refused" in err and "fp32" in err
    assert sd_scale.main(["--device", "cpu", "--arms", "cfg,nope"]) == 2
    assert "--arms" in capsys.readouterr().err
