"""memlib.cache: entries keyed by the code and the weights; a corrupt entry is recomputed and kept aside."""
import numpy as np
import pytest
import torch

from memlib.cache import cached_arrays


def test_cache_recomputes_when_the_code_changes(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "generate.py").write_text(f"magnitude = '{name}'\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "v1"))
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    assert len(calls) == 1
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "v2"))  # the same key, computed by other code
    cached_arrays("sweep", {"k": 1}, compute, tmp_path / "cache")
    assert len(calls) == 2


def test_weights_fingerprint_follows_the_weights_not_the_name():
    from memlib.backends.ddpm import DDPMBackend
    from memlib.cache import weights_fingerprint

    a, a_again, b = DDPMBackend.tiny_random(seed=0), DDPMBackend.tiny_random(seed=0), DDPMBackend.tiny_random(seed=1)
    assert weights_fingerprint(a) == weights_fingerprint(a_again)
    assert weights_fingerprint(a.unet) == weights_fingerprint(a_again.unet) != weights_fingerprint(b.unet)
    assert weights_fingerprint(a) != weights_fingerprint(b)
    with torch.no_grad():
        next(a_again.unet.parameters())[0].add_(1e-3)  # new weights under the same name
    assert weights_fingerprint(a) != weights_fingerprint(a_again)
    with pytest.raises(TypeError, match="no model weights"):
        weights_fingerprint(object())


def test_detection_sweep_recomputes_for_new_code_or_new_weights(tiny_sd, tmp_path, monkeypatch):
    import memlib.wen.scores as scores
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    from memlib.generation import GenerationConfig

    runs = []
    real = scores.generate
    monkeypatch.setattr(scores, "generate", lambda *a, **k: runs.append(1) or real(*a, **k))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("x = 1\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code"))
    cfg = GenerationConfig(num_steps=2, n_gens=1, guidance_scale=3.0)
    first = scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 1
    other = StableDiffusionBackend.tiny_random(seed=1)  # other weights, the same label
    scores.detection_sweep(other, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 2
    (tmp_path / "code2").mkdir()
    (tmp_path / "code2" / "m.py").write_text("x = 2\n")
    monkeypatch.setenv("MEMLIB_CODE_DIR", str(tmp_path / "code2"))
    again = scores.detection_sweep(tiny_sd, ["a dog"], cfg, "tiny-sd-0", progress=False)
    assert len(runs) == 3 and np.allclose(again["text_norm"], first["text_norm"])


def test_corrupt_cache_entry_is_recomputed_and_kept_aside_not_deleted(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(5)}

    assert cached_arrays("x", {"k": 1}, compute, tmp_path)["a"].tolist() == [0, 1, 2, 3, 4]
    cached_arrays("x", {"k": 1}, compute, tmp_path)
    assert len(calls) == 1
    entry = next(tmp_path.glob("x-*.npz"))
    entry.write_bytes(entry.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match="corrupt.*kept it as"):
        assert cached_arrays("x", {"k": 1}, compute, tmp_path)["a"].tolist() == [0, 1, 2, 3, 4]
    assert len(calls) == 2
    kept = list(tmp_path.glob(f"{entry.name}.corrupt*"))
    assert len(kept) == 1 and len(kept[0].read_bytes()) == 20


def test_an_entry_whose_checksum_matches_but_is_not_an_npz_is_recomputed(tmp_path):
    from memlib.cache import cached_arrays
    from memlib.checkpoint import file_sha256

    first = cached_arrays("pt", {"a": 1}, lambda: {"x": np.arange(3)}, folder=tmp_path)
    entry = next(tmp_path.glob("pt-*.npz"))
    entry.write_bytes(b"not a zip file")
    entry.with_suffix(".sha256").write_text(file_sha256(entry))
    again = cached_arrays("pt", {"a": 1}, lambda: {"x": np.arange(3)}, folder=tmp_path)
    assert (again["x"] == first["x"]).all() and list(tmp_path.glob("pt-*.corrupt*"))
