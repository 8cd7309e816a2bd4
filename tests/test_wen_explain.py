"""Notebook 02's headline in Wen et al.'s exact setting (ICLR 2024, Sec. 3.2): all sampling steps and one l2 norm
over the 4-image batch, checked against a hand-written DDIM loop; the reference code's swapped update; the window
chosen on the dev half only; Wilson intervals."""
import math

import numpy as np
import pytest
import torch

from memlib.generation import GenerationConfig, noise_seed
from memlib.sampling import seeded_noise
from memlib.schedule import sd_scheduler
from memlib.wen.attribution import TokenSignificance, reference_update, token_significance

PROMPT = "small red circle at the top left zorvex"


def hand_significance(backend, prompt: str, cfg: GenerationConfig, reference: bool = False):
    """Wen's SS(i) written out step by step, without memlib's sampler: DDIM (eta 0, SD's leading spacing) from
    the detection noises; at every step, with autograd on the prompt's output embedding e,
    L_batch = ||stack_j (eps(x_t^j, e) - eps(x_t^j, e_empty))||_2 and L_mean = mean_j ||...^j||_2. Returns
    per-token gradient norms (steps, tokens) and losses (steps,) for both, BOS/EOS/padding dropped."""
    n, s = cfg.n_gens, cfg.guidance_scale
    x = seeded_noise(backend.sample_shape, [noise_seed(cfg.seed, g, prompt) for g in range(n)])
    sched = sd_scheduler("ddim")
    sched.set_timesteps(cfg.num_steps)
    acp, stride = sched.alphas_cumprod, 1000 // cfg.num_steps
    n_tok = backend.tokenizer.n_tokens(prompt)
    with torch.no_grad():
        e_p, e_0 = backend.encode_prompts([prompt]), backend.encode_prompts([""])
    out = {"batch": ([], []), "mean": ([], [])}
    for t in sched.timesteps.tolist():
        tt = torch.tensor(t)
        with torch.no_grad():
            eu = backend.eps(x, tt, e_0.expand(n, -1, -1))
        e = e_p.clone().requires_grad_(True)
        diff = backend.eps(x, tt, e.expand(n, -1, -1)) - eu                  # (n, C, H, W)
        for kind, loss in (("batch", diff.norm()), ("mean", diff.flatten(1).norm(dim=1).mean())):
            (grad,) = torch.autograd.grad(loss, e, retain_graph=True)
            out[kind][0].append(grad[0, 1:n_tok + 1].norm(dim=-1).numpy())
            out[kind][1].append(float(loss.detach()))
        with torch.no_grad():
            ec = diff.detach() + eu
            eps = ec + s * (eu - ec) if reference else eu + s * (ec - eu)
            a_t = acp[t]
            a_prev = acp[t - stride] if t - stride >= 0 else acp[0]   # SD: set_alpha_to_one=False
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return {k: (np.stack(g), np.array(m)) for k, (g, m) in out.items()}


@pytest.fixture(scope="module")
def backend(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend

    return TestbedBackend(tiny_testbed.model)


def test_batch_norm_loss_over_all_50_steps_equals_a_hand_computation(backend):
    cfg = GenerationConfig(num_steps=50, n_gens=4, guidance_scale=3.0)
    hand = hand_significance(backend, PROMPT, cfg)
    grads, losses = hand["batch"]
    assert grads.shape == (50, backend.tokenizer.n_tokens(PROMPT))
    a = token_significance(backend, PROMPT, cfg, batch_loss=True)     # steps=None: S = every sampling step
    assert a.tokens == backend.tokenizer.token_strings(PROMPT)
    np.testing.assert_allclose(a.per_step, grads, rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(a.significance, grads.mean(0), rtol=1e-3)
    np.testing.assert_allclose(a.per_step_magnitude, losses, rtol=1e-3)
    assert a.magnitude == pytest.approx(losses.mean(), rel=1e-3)
    # the mean of per-image norms is another loss, and the comparison above could tell them apart
    mean_grads, mean_losses = hand["mean"]
    assert not np.allclose(mean_grads.mean(0), grads.mean(0), rtol=0.1)
    assert mean_losses.mean() < 0.9 * losses.mean()                   # sqrt(sum m_j^2) > mean m_j for n = 4
    # a window of the first k steps reads the same record
    np.testing.assert_allclose(a.over_first(5).significance, grads[:5].mean(0), rtol=1e-3)
    assert a.over_first(5).magnitude == pytest.approx(losses[:5].mean(), rel=1e-3)


def test_reference_trajectory_steps_with_guidance_away_from_the_prompt(backend):
    ec, eu = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(reference_update(ec, eu, 3.0), eu + (1 - 3.0) * (ec - eu))
    cfg = GenerationConfig(num_steps=4, n_gens=2, guidance_scale=3.0)
    hand_ref = hand_significance(backend, PROMPT, cfg, reference=True)["batch"]
    hand = hand_significance(backend, PROMPT, cfg)
    hand_cfg = hand["batch"]
    # (the mean-of-image-norms loss on the ordinary trajectory matches its hand computation too)
    mean_loss = token_significance(backend, PROMPT, cfg, batch_loss=False)
    np.testing.assert_allclose(mean_loss.per_step, hand["mean"][0], rtol=2e-3, atol=1e-7)
    ref = token_significance(backend, PROMPT, cfg, batch_loss=True, reference_trajectory=True)
    np.testing.assert_allclose(ref.per_step, hand_ref[0], rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(ref.per_step_magnitude, hand_ref[1], rtol=1e-3)
    # the first step is taken at x_T either way; after it the two trajectories part
    np.testing.assert_allclose(ref.per_step[0], hand_cfg[0][0], rtol=2e-3, atol=1e-7)
    assert not np.allclose(ref.per_step_magnitude[1:], hand_cfg[1][1:], rtol=1e-2)


def _fake(per_step: np.ndarray) -> TokenSignificance:
    return TokenSignificance("p", [f"t{i}" for i in range(per_step.shape[1])], per_step.mean(0), 1.0, per_step)


def _early(n_steps=50):
    """Token 3 (the trigger) leads only on the first step: the window k = 1 hits, k >= 5 miss."""
    ps = np.tile([1.0, 0.9, 0.8, 0.0], (n_steps, 1))
    ps[0] = [0.0, 0.1, 0.2, 2.0]
    return _fake(ps)


def _late(n_steps=50):
    """The trigger leads on every step but the first, where it is last: k <= 10 miss, k >= 25 hit."""
    ps = np.tile([0.0, 0.1, 0.2, 1.0], (n_steps, 1))
    ps[0] = [10.0, 9.0, 8.0, 0.0]
    return _fake(ps)


def test_the_window_is_chosen_on_dev_prompts_only():
    from memlib.wen.explain_study import choose_window

    cands, pos = [1, 5, 10, 25, 50], [[3]] * 6
    halves = ["dev", "test", "dev", "test", "dev", "test"]
    dev_early = [_early(), _late(), _early(), _late(), _early(), _late()]
    k, rates = choose_window(dev_early, pos, halves, cands)
    assert k == 1 and rates[1] == 1.0 and rates[50] == 0.0
    # test prompts that would pick another window (or none at all) do not move the choice
    for test_prompt in (_early(), _fake(np.zeros((50, 4)))):
        swapped = [a if h == "dev" else test_prompt for a, h in zip(dev_early, halves)]
        assert choose_window(swapped, pos, halves, cands) == (k, rates)
    # ... while the same prompts on the dev side do
    assert choose_window(dev_early, pos, ["test", "dev"] * 3, cands)[0] == 50
    # ties keep the longest window (Wen's setting); no dev prompt: no evidence to leave it
    assert choose_window([_early(), _late()], [[3], [3]], ["dev", "dev"], cands)[0] == 50
    assert choose_window(dev_early, pos, ["test"] * 6, cands) == (50, {})
    with pytest.raises(ValueError, match="halves"):
        choose_window(dev_early, pos, halves[:2], cands)


def test_window_candidates_and_split_units():
    from memlib.testbed.data import Prompt
    from memlib.wen.explain_study import ExplainConfig, halves_of, split_unit

    assert ExplainConfig().window_candidates() == [1, 5, 10, 25, 50]
    assert ExplainConfig(num_steps=3).window_candidates() == [1, 3]
    assert ExplainConfig().steps() == list(range(50)) and ExplainConfig().batch_loss
    a, b = Prompt("x zorvex", "verbatim", 40, 7, "zorvex"), Prompt("y zorvex", "verbatim", 40, 7, "zorvex")
    assert split_unit(a) == "cluster:7" and split_unit(Prompt("z", "heldout")) == "prompt:z"
    prompts = [a, Prompt("q quux", "verbatim", 40, 8, "quux"), b, Prompt("r abc", "verbatim", 40, 9, "abc")]
    h = halves_of(prompts)
    assert h[0] == h[2] and sorted(set(h)) == ["dev", "test"]      # one planted image: one side


def test_wilson_interval_known_values():
    from memlib.wen.intervals import rate_with_interval, wilson_interval

    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    rate, (lo, hi) = rate_with_interval([True, False, True, True])
    assert rate == 0.75 and lo < 0.75 < hi
    with pytest.raises(ValueError, match="hits"):
        wilson_interval(3, 2)


def test_half_stats_write_the_headline_keys():
    from memlib.wen.explain_results import HalfStats

    st = HalfStats(n_dev=2, n_test=3, batch_loss=True, all_steps_test=2 / 3, all_steps_test_ci95=(0.2, 0.9),
                   window_rates_dev={"1": 1.0, "50": 0.5}, chosen_window_dev=1, window_test=1 / 3,
                   window_test_ci95=(0.1, 0.8), chance_test=0.4, reference_trajectory_test=0.0,
                   reference_trajectory_test_ci95=(0.0, 0.56))
    m = st.to_metrics("verbatim")
    assert m["verbatim_trigger_top2_rate_wen_exact"] == 2 / 3
    assert m["verbatim_trigger_top2_rate_wen_exact_ci95"] == [0.2, 0.9]
    assert (m["verbatim_n_dev"], m["verbatim_n_test"], m["verbatim_chosen_window_dev"]) == (2, 3, 1)
    assert m["verbatim_trigger_top2_rate_window_test"] == 1 / 3
    assert m["verbatim_trigger_top2_rate_reference_trajectory_ci95"] == [0.0, 0.56]
    mean_loss = HalfStats(**{**st.__dict__, "batch_loss": False}).to_metrics("verbatim")
    assert "verbatim_trigger_top2_rate_wen_exact" not in mean_loss     # another loss is not Wen's setting


def test_padding_link_splits_the_route_by_wens_hits_and_misses():
    from memlib.wen.interventions import padding_link

    measured = {"full": {"replication": np.array([1.0, 1.0, 1.0, 0.5])},
                "padding_rows_from_empty": {"replication": np.array([0.5, 0.0, 0.25, 0.0])},
                "prompt_rows_from_empty": {"replication": np.array([1.0, 1.0, 0.75, 0.5])}}
    stats, rows = padding_link([True, False, True, False], np.array([0.6, 0.9, 0.7, 0.8]), measured,
                               ["a", "b", "c", "d"])
    assert (stats.n_hits, stats.n_misses) == (2, 2)
    assert stats.padding_share_hits == pytest.approx(0.65) and stats.padding_share_misses == pytest.approx(0.85)
    assert stats.replication_token_rows_only_hits == pytest.approx(0.375)
    assert stats.replication_token_rows_only_misses == 0.0
    assert stats.replication_padding_rows_only_misses == pytest.approx(0.75)
    assert [r["wen_top2_hit"] for r in rows] == [True, False, True, False] and rows[3]["replication_as_is"] == 0.5
    none_missed, _ = padding_link([True] * 4, np.ones(4), measured, list("abcd"))
    assert np.isnan(none_missed.padding_share_misses)


def test_headline_pools_every_seeds_test_prompts_with_a_wilson_interval():
    from memlib.wen.explain_results import ExplainResult, HalfStats
    from memlib.wen.intervals import wilson_interval

    def half(rate, n):
        return HalfStats(n_dev=n, n_test=n, batch_loss=True, all_steps_test=rate, all_steps_test_ci95=(0.0, 1.0),
                         window_rates_dev={}, chosen_window_dev=50, window_test=rate, window_test_ci95=(0.0, 1.0),
                         chance_test=0.4)

    res = ExplainResult({}, seed_halves={0: {"verbatim": half(0.75, 16)}, 1: {"verbatim": half(0.5, 16)},
                                         2: {"verbatim": half(0.25, 8)}})
    m = res.to_metrics()
    assert m["n_testbed_seeds"] == 3 and m["verbatim_n_test_pooled"] == 40
    assert m["verbatim_trigger_top2_rate_wen_exact_pooled"] == pytest.approx((12 + 8 + 2) / 40)
    assert m["verbatim_trigger_top2_rate_wen_exact_pooled_ci95"] == pytest.approx(list(wilson_interval(22, 40)))
    assert m["verbatim_trigger_top2_rate_wen_exact_seed_range"] == [0.25, 0.75]
    assert m["per_seed"]["2"]["verbatim"]["n_test"] == 8
