"""memlib.device: where networks run. Devices and precisions are resolved and refused by name, GPU batches are sized
from free memory (mocked here), and on the CPU in fp32 every path is the identity: results stay bit-identical."""
import json

import pytest
import torch

from memlib.config import ConfigError
from memlib.device import (CPU, Compute, batch_size, compute, compute_tag, resolve_device, resolve_dtype,
                           to_host)

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks refusals on a machine without a GPU")


def test_auto_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device(None).type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_the_api_keeps_its_names():
    from memlib.api import model_setup

    assert model_setup.resolve_device is resolve_device and model_setup.resolve_dtype is resolve_dtype
    assert model_setup.DTYPES["bf16"] is torch.bfloat16


@needs_no_gpu
@pytest.mark.parametrize("device,dtype,named", [("cpu", "fp16", "dtype"), ("auto", "bf16", "dtype"),
                                                ("cuda", "fp32", "device"), ("tpu", "fp32", "device"),
                                                ("cpu", "int8", "dtype")])
def test_refusals_name_the_parameter_in_one_line(device, dtype, named):
    with pytest.raises(ConfigError, match=f"parameter '{named}'") as e:
        compute(device, dtype)
    assert "\n" not in str(e.value)


def test_the_cpu_in_fp32_is_the_reference_and_its_tag_is_stable():
    cx = compute("cpu", "fp32")
    assert cx == CPU and cx.is_reference and cx.tag == "cpu:fp32"
    assert Compute(torch.device("cuda"), torch.float16).tag == "cuda:fp16"
    assert not Compute(torch.device("cuda")).is_reference


def test_batch_size_follows_free_gpu_memory_and_leaves_the_cpu_alone(monkeypatch):
    assert batch_size(128, 10**9, "cpu") == 128          # unchanged on the CPU, however large an item
    free = {"bytes": 8 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    assert batch_size(128, 2**20, "cuda") == 128          # 4 GiB hold 4096 items: capped at the configured size
    assert batch_size(128, 2**26, "cuda") == 64           # half of 8 GiB at 64 MiB an item
    assert batch_size(128, 2**26, "cuda", cap=32) == 32
    free["bytes"] = 2**20
    assert batch_size(128, 2**26, "cuda") == 1            # never below one


def test_to_host_is_the_identity_for_cpu_fp32_and_widens_half():
    x = torch.randn(3)
    assert to_host(x).data_ptr() == x.data_ptr()
    assert to_host(x.half()).dtype == torch.float32
    assert to_host(x.double()).dtype == torch.float64


def test_compute_tag_of_backends_and_modules():
    from memlib.backends import make_backend

    b = make_backend("tiny-ddpm")
    assert compute_tag(b) == "cpu:fp32" and compute_tag(b.unet) == "cpu:fp32"
    assert compute_tag(torch.nn.Linear(2, 2).half()) == "cpu:fp16"


def test_pixel_backend_in_fp32_calls_the_network_unchanged():
    """The precision wrapper must not touch fp32 outputs: the CPU results stay bit-identical."""
    from memlib.backends.testbed import DigitsBackend
    from memlib.testbed.model import UnconditionalConfig, make_unconditional_unet

    torch.manual_seed(0)
    unet = make_unconditional_unet(UnconditionalConfig()).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        direct = unet(x, t, return_dict=False)[0]
        via = DigitsBackend(unet).eps(x, t, None)
    assert torch.equal(direct, via)


def test_every_notebook_config_has_device_and_dtype_defaults_and_refuses_half_on_the_cpu():
    from tests.test_hostile_parameters import CONFIGS

    for cls in CONFIGS:
        cfg = cls()
        assert (cfg.device, cfg.dtype) == ("auto", "fp32")
        assert cfg.backend_options()["precision"] == torch.float32
        if not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="parameter 'dtype'"):
                cls(dtype="fp16")


def test_every_notebook_has_device_and_dtype_parameters():
    from memlib.harness.reproduce import notebooks
    from memlib.paths import repo_root

    for nb in notebooks(repo_root()):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        src = "".join(cell["source"])
        assert 'device = "auto"' in src and 'dtype = "fp32"' in src, nb.name


def test_device_and_dtype_do_not_send_figures_to_runs_and_the_provenance_records_them(tmp_path, monkeypatch):
    from memlib.provenance import non_default_params, provenance
    from memlib.testbed.evaluate import TestbedNotebookConfig

    assert non_default_params(TestbedNotebookConfig(device="cpu")) == {}
    p = provenance("00_testbed", TestbedNotebookConfig(device="cpu").to_dict())
    assert (p["compute_device"], p["compute_dtype"]) == ("cpu", "fp32")
    assert {"device", "cpu", "parameters"} <= set(p)                      # the existing keys stay
    assert provenance("x", {})["compute_device"] == "cpu"                 # a run without the parameters


def test_cache_keys_hold_where_the_arrays_were_computed(tmp_path, monkeypatch):
    """A GPU run must never read arrays cached by a CPU run (or the reverse): the detection sweep's key holds the
    backend's compute tag."""
    from memlib.backends import make_backend
    from memlib.generation import GenerationConfig
    from memlib.wen import scores

    keys = []
    monkeypatch.setattr(scores, "cached_arrays", lambda name, key, fn: keys.append(key) or fn())
    backend = make_backend("tiny-sd")
    scores.detection_sweep(backend, ["a cat"], GenerationConfig(num_steps=2, n_gens=1), "tiny", progress=False)
    assert keys and all(k["compute"] == "cpu:fp32" for k in keys)
