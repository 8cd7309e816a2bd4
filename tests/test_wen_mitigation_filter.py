"""Notebook 03's training-time filter (Wen et al., ICLR 2024, Sec. 4.2) is scored from the float16 weights its
run saved, in the run that trains it as in every later run that loads it: the two give the same images."""
import pytest
import torch

from memlib.backends.testbed import TestbedBackend
from memlib.generation import GenerationConfig, generate
from memlib.mitigate.evalset import evaluation_prompts
from memlib.mitigate.method import Context
from memlib.mitigate.run import run_method
from memlib.testbed.build import TestbedRef
from memlib.wen.mitigation_study import MitigationConfig, filter_run

TINY = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)


class _NoScores:
    """Scores nothing: these checks compare images."""

    def score(self, *args, **kwargs):
        return None


def _backend(tb):
    return TestbedBackend(tb.model, tb)


def _images(method, tb, prompts, gen, cache):
    """The study's path: ``run_method`` on the shipped model's backend, the method bringing its checkpoint."""
    return run_method(_backend(tb), method, prompts, _NoScores(), gen, cache=cache, progress=False).images


@pytest.mark.slow
def test_the_run_that_trains_a_filter_scores_its_saved_float16_weights(tiny_testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path / "checkpoints"))   # nothing saved yet: the first run trains
    cfg = MitigationConfig(testbed=TINY, progress=False)
    prompts = evaluation_prompts(tiny_testbed.data, "test", max_per_group=1)
    gen = GenerationConfig(num_steps=3, guidance_scale=3.0, n_gens=2, seed=0)
    tau = 0.2
    trained, method = filter_run(cfg, tau, tiny_testbed)
    assert trained.train_state is not None                 # trained in this call, float32 weights in memory
    scored = method.apply(Context(_backend(tiny_testbed), [prompts[0].text], gen)).backend.model
    in_memory = dict(trained.model.unet.named_parameters())
    for name, p in scored.unet.named_parameters():
        assert torch.equal(p, in_memory[name].half().float()), name
    assert any(not torch.equal(p, in_memory[n]) for n, p in scored.unet.named_parameters())
    first = _images(method, tiny_testbed, prompts, gen, "first-run")

    again, method_again = filter_run(cfg, tau, tiny_testbed)
    assert again.train_state is None                       # a later run loads the saved checkpoint
    rerun = _images(method_again, tiny_testbed, prompts, gen, "rerun")
    assert torch.equal(first, rerun)
    # the float32 weights training ended with give other images: scoring them would not match a rerun
    in_memory_images = generate(_backend(trained), [p.text for p in prompts], gen, progress=False).images
    assert in_memory_images.shape == first.shape and not torch.equal(in_memory_images, first)
