"""The sampler's hook contract, on a hand-made denoiser and on the tiny testbed."""
import numpy as np
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


def _run(hooks=(), steps=4, stop_after=None, den=None, **kw):
    den = den or CountingDenoiser()
    x = seeded_noise((3, 8, 8), [1, 2], "cpu")
    cond, uncond = torch.ones(2, 5, 4), torch.zeros(1, 5, 4)
    out = sample(den, x, sd_scheduler(), steps, cond, uncond, 3.0, hooks, stop_after=stop_after, **kw)
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


def test_an_extra_branch_joins_the_one_batched_model_call_of_each_step():
    seen = []

    def add_branch(s):   # e.g. AMG's nearest-neighbour caption, requested at the first step
        if s.i == 0:
            s.branches["nn"] = torch.full((1, 5, 4), 5.0)
        seen.append((s.eps_uncond, dict(s.eps_branches)))

    base, _ = _run()
    out, den = _run([add_branch])
    assert den.calls == [4, 6, 6, 6]   # from the next step on: 2 images x (uncond, cond, nn), still one call
    assert seen[0][1] == {} and all(torch.allclose(b["nn"] - eu, torch.full_like(eu, 5.0)) for eu, b in seen[1:])
    assert torch.equal(out, base)      # a branch no hook uses leaves the sample alone
    out, den = _run(branches={"nn": torch.full((2, 5, 4), 5.0)})   # from the first step
    assert den.calls == [6] * 4 and torch.equal(out, base)


def test_hook_changes_to_conditioning_and_scale_hold_for_later_steps():
    seen = []

    def switch(s):
        if s.i == 0:
            s.cond, s.uncond, s.guidance_scale = torch.full((1, 5, 4), 5.0), torch.ones(1, 5, 4), 1.0
        seen.append((s.eps_cond, s.eps_uncond, s.eps, s.guidance_scale))

    base, _ = _run()
    out, _ = _run([switch])
    ec, eu, _, _ = seen[0]
    assert torch.allclose(ec - eu, torch.ones_like(ec))   # step 0's call ran before the change
    for ec, eu, eps, scale in seen[1:]:
        assert scale == 1.0 and torch.allclose(ec - eu, torch.full_like(ec, 4.0)) and torch.allclose(eps, ec)
    assert not torch.allclose(out, base)


def test_gradient_through_x0_hat_matches_the_linear_denoisers_analytic_gradient():
    grads = []
    _run([lambda s: grads.append((s.alpha_bar, s.x0_hat, s.grad_of(lambda x0: 0.5 * (x0 ** 2).flatten(1).sum(1))))])
    assert len(grads) == 4
    for a, x0_hat, g in grads:
        # eps = 0.1 x + c in both branches, so x0_hat = k x_t + const with k = (1 - 0.1 sqrt(1 - a)) / sqrt(a),
        # and d/dx_t of 0.5 |x0_hat|^2 is k x0_hat, image by image
        k = (1 - 0.1 * (1 - a) ** 0.5) / a ** 0.5
        assert torch.allclose(g, k * x0_hat, rtol=1e-5, atol=1e-6)


def test_model_evaluations_per_image_count_every_row_hook_calls_included():
    stats = {}
    _run(stats=stats)
    assert stats == {"model_calls": 4, "model_evals_per_image": 8.0}   # cond + uncond, 4 steps
    stats = {}
    _run([lambda s: s.denoise(s.x, s.t, s.cond)], branches={"nn": torch.zeros(1, 5, 4)}, stats=stats)
    assert stats == {"model_calls": 8, "model_evals_per_image": 16.0}  # per step: 3 rows in one call + 1 extra
    stats = {}
    _run([lambda s: s.grad_of(lambda x0: x0.flatten(1).sum(1))], stop_after=2, stats=stats)
    assert stats == {"model_calls": 4, "model_evals_per_image": 8.0}   # the gradient reruns both branches
    stats = {}
    sample(CountingDenoiser(), seeded_noise((3, 8, 8), [1, 2]), sd_scheduler(), 3, None, torch.zeros(1, 5, 4),
           stats=stats)
    assert stats["model_evals_per_image"] == 3.0                       # unconditional: one row per step


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
    from memlib.generation import GenerationConfig, generate

    backend, prompts = TestbedBackend(tiny_testbed.model), ["a small red circle at the top left", "x"]
    states = {}

    def keep_states(rows):   # every row's x_t at every step, to recompute its norms without batching
        return [lambda s: states.update({(r, s.i): (s.x[k], s.t) for k, r in enumerate(rows)})]

    g = generate(backend, prompts, GenerationConfig(num_steps=3, n_gens=2, batch_size=3), extra_hooks=keep_states,
                 progress=False)
    assert g.images.shape == (2, 2, 3, 16, 16) and g.text_norm.shape == (2, 2, 3)
    # decode clamps; the raw samples are finite, partly inside the pixel range, and are what the images show
    assert torch.isfinite(g.samples).all() and (g.samples.abs() < 1).any()
    assert torch.equal(g.images, backend.decode(g.samples))
    assert len(states) == 12
    with torch.no_grad():   # each step's 4 images in one batch, not the 3 + 1 that generation used
        emb, empty = backend.encode_prompts(prompts).repeat_interleave(2, 0), backend.encode_prompts([""])
        for i in range(3):
            x, t = torch.stack([states[r, i][0] for r in range(4)]), torch.tensor(states[0, i][1])
            eu = backend.eps(x, t, empty.expand(4, -1, -1))
            ec = backend.eps(x, t, emb)
            np.testing.assert_allclose(g.text_norm[..., i].ravel(), (ec - eu).flatten(1).norm(dim=1), rtol=1e-4)
            np.testing.assert_allclose(g.uncond_norm[..., i].ravel(), eu.flatten(1).norm(dim=1), rtol=1e-4)
    assert (g.text_norm > 0).all()
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
