"""Wen et al.'s detection score (ICLR 2024, Sec. 3.1): the first-step text-conditional magnitude, its average
over generations and steps; the tiled-l2 and Carlini baselines."""
import numpy as np
import pytest
import torch

from memlib.generation import GenerationConfig, generate, noise_seed
from memlib.sampling import seeded_noise
from memlib.wen.scores import carlini_score, tiled_l2, wen_score


def test_first_step_magnitude_equals_a_hand_computation(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend

    backend = TestbedBackend(tiny_testbed.model)
    prompts = ["a small red circle at the top left", "a large blue ring at the bottom right"]
    cfg = GenerationConfig(num_steps=50, n_gens=2)
    g = generate(backend, prompts, cfg, stop_after=1, progress=False)
    assert g.text_norm.shape == (2, 2, 1) and g.timesteps == [981] and g.images is None
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            for j in range(2):
                x = seeded_noise((3, 16, 16), [noise_seed(0, j, prompt)])
                t = torch.tensor(981)
                ec = backend.eps(x, t, backend.encode_prompts([prompt]))
                eu = backend.eps(x, t, backend.encode_prompts([""]))
                assert g.text_norm[p, j, 0] == pytest.approx(float((ec - eu).norm()), rel=1e-4)


def test_wen_score_averages_the_first_generations_then_the_first_steps():
    # A mean over a rectangle is the same in either order, so what can go wrong is the axes and the subsets:
    # with random values and n_gens != n_steps every such mix-up gives another number (checked below).
    tn = np.random.default_rng(0).random((2, 3, 4))
    hand = [np.mean([np.mean([tn[p, j, t] for j in range(2)]) for t in range(3)]) for p in range(2)]
    assert wen_score(tn, n_steps=3, n_gens=2) == pytest.approx(hand, rel=1e-12)
    for wrong in (tn[:, :3, :2].mean((1, 2)), tn[:, :2, :2].mean((1, 2)), tn[:, :, :3].mean((1, 2))):
        assert not np.allclose(wrong, hand)
    assert wen_score(tn, n_steps=1, n_gens=1).tolist() == tn[:, 0, 0].tolist()
    assert wen_score(tn, n_gens=1, steps=slice(1, 3)) == pytest.approx(tn[:, 0, 1:3].mean(1), rel=1e-12)
    with pytest.raises(ValueError, match="only 3"):
        wen_score(tn, n_gens=4)


def test_tiled_l2_and_carlini_score():
    a = torch.zeros(1, 3, 8, 8)
    b = a.clone()
    b[0, :, :2, :2] = 1.0  # one tile fully different
    assert tiled_l2(a, a).item() == 0.0 and tiled_l2(a, b).item() == pytest.approx(1.0)
    same = torch.rand(1, 3, 3, 8, 8).expand(1, 3, 3, 8, 8).clone()
    same[0, 1:] = same[0, 0]
    varied = torch.rand(1, 3, 3, 8, 8)
    assert carlini_score(same)[0] > carlini_score(varied)[0]
