"""The sampler's hook contract, on a hand-made denoiser and on the tiny testbed."""
import pytest
import torch

from memlib.schedule import sd_scheduler
from memlib.sampling import sample, seeded_noise


class CountingDenoiser:
    """eps = 0.1 * x + conditioning mean; counts calls and batch sizes."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, emb):
        self.calls.append(x.shape[0])
        return 0.1 * x + emb.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def _run(hooks=(), steps=4, stop_after=None, den=None):
    den = den or CountingDenoiser()
    x = seeded_noise((3, 8, 8), [1, 2], "cpu")
    cond, uncond = torch.ones(2, 5, 4), torch.zeros(1, 5, 4)
    out = sample(den, x, sd_scheduler(), steps, cond, uncond, 3.0, hooks, stop_after=stop_after)
    return out, den


def test_hook_sees_cond_and_uncond_noise_with_sample_shapes():
    seen = []
    _run([lambda s: seen.append(s)])
    assert len(seen) == 4 and seen[0].t == 751  # SD's leading spacing for 4 steps: 751, 501, 251, 1
    s = seen[0]
    for name in ("x", "eps_cond", "eps_uncond", "eps", "x0_hat"):
        assert getattr(s, name).shape == (2, 3, 8, 8), name
    assert torch.allclose(s.eps_cond - s.eps_uncond, torch.ones_like(s.eps))  # the emb means differ by 1
    assert torch.allclose(s.eps, s.eps_uncond + 3.0 * (s.eps_cond - s.eps_uncond))
    a = s.alpha_bar
    assert torch.allclose(s.x0_hat, (s.x - (1 - a) ** 0.5 * s.eps) / a ** 0.5)


def test_one_batched_model_call_per_step_with_both_branches():
    _, den = _run()
    assert den.calls == [4, 4, 4, 4]  # 2 images x (cond + uncond), one call per step
    _, den = _run(stop_after=1)
    assert den.calls == [4]


def test_hook_override_takes_effect_and_identity_changes_nothing():
    base, _ = _run()
    same, _ = _run([lambda s: s.eps.clone()])
    assert torch.equal(base, same)
    changed, _ = _run([lambda s: torch.zeros_like(s.eps)])
    assert not torch.allclose(base, changed)
    later = []
    _run([lambda s: torch.zeros_like(s.eps), lambda s: later.append(s.eps.abs().max().item())])
    assert later == [0.0] * 4  # a later hook sees the replaced estimate


def test_hook_with_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        _run([lambda s: torch.zeros(1)])


def test_seeded_noise_does_not_depend_on_batch_composition():
    a = seeded_noise((3, 4, 4), [5, 6, 7])
    b = seeded_noise((3, 4, 4), [7])
    assert torch.equal(a[2], b[0])


def test_scheduler_follows_stable_diffusion_spacing_without_clipping():
    s = sd_scheduler()
    s.set_timesteps(50)
    assert int(s.timesteps[0]) == 981 and s.config.clip_sample is False
    assert abs(float(s.alphas_cumprod[981]) ** 0.5 - 0.076) < 0.002


def test_testbed_generation_runs_and_records_norms(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.generate import GenerationConfig, generate

    g = generate(TestbedBackend(tiny_testbed.model), ["a small red circle at the top left", "x"],
                 GenerationConfig(num_steps=3, n_gens=2, batch_size=3), progress=False)
    assert g.images.shape == (2, 2, 3, 16, 16) and g.text_norm.shape == (2, 2, 3)
    assert (g.images >= 0).all() and (g.images <= 1).all()
    again = generate(TestbedBackend(tiny_testbed.model), ["x"], GenerationConfig(num_steps=3, n_gens=2),
                     progress=False)
    assert torch.allclose(again.images[0], g.images[1], atol=1e-5)  # same prompt, same noise, any batch
    with pytest.raises(ValueError, match="empty"):
        generate(TestbedBackend(tiny_testbed.model), [], progress=False)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_target_and_eps_conversion_agree(prediction_type):
    """A model whose raw output equals its training target predicts exactly the noise that was added."""
    from memlib.schedule import eps_from_output, training_target

    abar = sd_scheduler("ddpm").alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([981, 500, 1])
    a = abar[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = training_target(x0, noise, a, prediction_type)
    assert torch.allclose(eps_from_output(target, xt, t, prediction_type, abar), noise, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        training_target(x0, noise, a, "sample")


def test_testbed_model_eps_converts_its_v_output():
    from memlib.testbed.model import TextToImageConfig, TextToImageModel

    model = TextToImageModel(TextToImageConfig(block_out_channels=(8, 8), text_layers=1, prediction_type="v_prediction"))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([981, 10])
    emb = model.encode_prompts(["a red circle", ""])
    with torch.no_grad():
        a = model.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert torch.allclose(model.eps(x, t, emb), a.sqrt() * model.raw(x, t, emb) + (1 - a).sqrt() * x, atol=1e-6)
    assert "alphas_cumprod" not in model.state_dict()  # derived from the schedule, never saved
