"""Generation: noise keyed per (prompt, generation), conditioning overrides, batch-independent DDPM, NFE count."""
import numpy as np
import pytest
import torch

from memlib.generation import GenerationConfig, generate, noise_seed
from memlib.sampling import seeded_noise
from memlib.schedule import sd_scheduler


class ToyBackend:
    """eps = 0.1 x + tanh(mean of the prompt's embedding), row by row: batching cannot change a single bit."""

    name, sample_shape, device, tokenizer = "toy", (2, 4, 4), torch.device("cpu"), None

    def __init__(self):
        self.calls = []

    def encode_prompts(self, prompts):
        return torch.stack([torch.randn(3, 2, generator=torch.Generator().manual_seed(noise_seed(0, 0, p)))
                            for p in prompts])

    def eps(self, x, t, emb):
        self.calls.append(x.shape[0])
        return 0.1 * x + torch.tanh(emb.mean(dim=(1, 2))).view(-1, 1, 1, 1)

    def decode(self, x):
        return ((x + 1) / 2).clamp(0, 1)

    def scheduler(self, kind="ddim"):
        return sd_scheduler(kind)


CFG = GenerationConfig(num_steps=3, n_gens=2, batch_size=3)


def _first_x(backend, prompts, cfg=CFG, **kw):
    """x_T of every (prompt, generation), read by a hook at the first step, in flat row order."""
    seen = {}

    def hooks(rows):
        return [lambda s: seen.update({r: s.x[k] for k, r in enumerate(rows)}) if s.i == 0 else None]

    g = generate(backend, prompts, cfg, extra_hooks=hooks, progress=False, **kw)
    return torch.stack([seen[r] for r in sorted(seen)]), g


def test_noise_keys_keep_the_original_prompts_noise_when_a_prompt_is_rewritten():
    be = ToyBackend()
    original, rewritten = ["a red circle zorvex", "a blue ring"], ["a red circle", "a blue ring"]
    x_orig, _ = _first_x(be, original)
    assert torch.equal(x_orig, seeded_noise(be.sample_shape, [noise_seed(0, g, p) for p in original for g in (0, 1)]))
    x_kept, _ = _first_x(be, rewritten, noise_keys=original)
    assert torch.equal(x_kept, x_orig)
    x_own, _ = _first_x(be, rewritten)
    assert not torch.equal(x_own[:2], x_orig[:2]) and torch.equal(x_own[2:], x_orig[2:])
    with pytest.raises(ValueError, match="noise_keys"):
        generate(be, rewritten, CFG, noise_keys=original[:1], progress=False)


def test_cond_override_replaces_the_prompts_embedding():
    be = ToyBackend()
    prompts = ["a red circle zorvex", "a blue ring"]
    other = be.encode_prompts(["a green square"])[0]
    g = generate(be, prompts, CFG, cond_override={0: other}, progress=False)
    # the same as generating the other text from the overridden prompt's noise; prompt 1 untouched
    want = generate(be, ["a green square", "a blue ring"], CFG, noise_keys=prompts, progress=False)
    assert torch.equal(g.samples, want.samples) and np.array_equal(g.text_norm, want.text_norm)
    assert not torch.equal(g.samples[0], generate(be, prompts, CFG, progress=False).samples[0])
    # a (P, ...) tensor of every prompt's own embedding changes nothing
    same = generate(be, prompts, CFG, cond_override=be.encode_prompts(prompts), progress=False)
    assert torch.equal(same.samples, generate(be, prompts, CFG, progress=False).samples)
    with pytest.raises(ValueError, match="outside"):
        generate(be, prompts, CFG, cond_override={2: other}, progress=False)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_samples_do_not_depend_on_the_batch_size(scheduler):
    be, prompts = ToyBackend(), ["a red circle zorvex", "a blue ring"]
    runs = [generate(be, prompts, GenerationConfig(num_steps=4, n_gens=2, batch_size=b, scheduler=scheduler),
                     progress=False).samples for b in (1, 3, 4)]
    assert all(torch.equal(r, runs[0]) for r in runs[1:])
    assert not torch.equal(runs[0][0, 0], runs[0][0, 1])   # each generation has its own noises


def test_ddpm_starts_from_the_same_noise_and_adds_its_own():
    be, prompts = ToyBackend(), ["a red circle zorvex"]
    ddpm, ddim = (generate(be, prompts, GenerationConfig(num_steps=4, n_gens=2, scheduler=k), progress=False)
                  for k in ("ddpm", "ddim"))
    assert np.array_equal(ddpm.uncond_norm[..., 0], ddim.uncond_norm[..., 0])   # same x_T
    assert not torch.allclose(ddpm.samples, ddim.samples)


def test_testbed_ddpm_samples_do_not_depend_on_the_batch_size(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend

    be, prompts = TestbedBackend(tiny_testbed.model), ["a small red circle at the top left", "x"]
    runs = [generate(be, prompts, GenerationConfig(num_steps=4, n_gens=2, batch_size=b, scheduler="ddpm"),
                     progress=False).samples for b in (1, 3, 4)]
    for r in runs[1:]:   # up to the model's own batched arithmetic (a per-batch noise differs by O(1))
        assert torch.allclose(r, runs[0], atol=1e-4)


def test_generation_counts_model_evaluations_per_image():
    be, prompts = ToyBackend(), ["a red circle zorvex", "a blue ring"]
    assert generate(be, prompts, CFG, progress=False).model_evals_per_image == 6.0   # 3 steps x (cond + uncond)
    assert generate(be, prompts, CFG, stop_after=1, progress=False).model_evals_per_image == 2.0
    be.calls.clear()
    g = generate(be, prompts, CFG, branches=lambda rows: {"nn": be.encode_prompts(["a green square"])},
                 extra_hooks=lambda rows: [lambda s: s.denoise(s.x, s.t, s.cond)], progress=False)
    assert g.model_evals_per_image == 12.0   # per step: uncond, cond, nn in one call, and the hook's call
    assert be.calls == [9, 3, 9, 3, 9, 3, 3, 1, 3, 1, 3, 1]   # batches of 3 then 1 image
