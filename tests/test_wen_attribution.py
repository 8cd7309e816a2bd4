"""Wen et al.'s token attribution (ICLR 2024, Sec. 3.2): the batch magnitude, gradients, occlusion, integrated
gradients, input-embedding gradients and padding-row swaps."""
import numpy as np
import pytest
import torch

from memlib.generation import GenerationConfig, generate, noise_seed
from memlib.sampling import seeded_noise
from memlib.schedule import sd_scheduler
from memlib.tokenizer import ClipBPETokenizer
from memlib.wen.attribution import drop_token, token_significance, trigger_positions
from memlib.wen.scores import wen_score


def test_batch_magnitude_is_one_norm_over_the_whole_batch():
    from itertools import product
    from math import sqrt

    from memlib.wen.magnitude import batch_magnitude, magnitude, model_magnitude

    g = torch.Generator().manual_seed(0)
    ec, eu = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    sq = {j: sum(float(ec[j, c, h, w] - eu[j, c, h, w]) ** 2 for c, h, w in product(range(2), range(4), range(4)))
          for j in range(3)}
    assert float(batch_magnitude(ec, eu)) == pytest.approx(sqrt(sum(sq.values())), rel=1e-6)
    assert magnitude(ec, eu).tolist() == pytest.approx([sqrt(sq[j]) for j in range(3)], rel=1e-6)
    assert float(batch_magnitude(ec, eu)) != pytest.approx(float(magnitude(ec, eu).mean()), rel=1e-2)
    # with the model: eps(x, e_p) - eps(x, e_empty) = sum w (e_p^2 - e_empty^2) at each of 16 pixels, so m = 4 |it|
    be = QuadraticBackend()
    x, t = torch.randn(2, 1, 4, 4, generator=g), torch.tensor(981)
    e, e0 = be.encode_prompts(["red circle zorvex"]), be.encode_prompts([""])
    m = model_magnitude(be.eps, x, t, e, be.eps(x, t, e0.expand(2, -1, -1)))
    c = float((be.w * (e[0] ** 2 - e0[0] ** 2)).sum().abs())
    assert m.tolist() == pytest.approx([4 * c, 4 * c], rel=1e-5) and not m.requires_grad
    e.requires_grad_(True)
    M = model_magnitude(be.eps, x, t, e, be.eps(x, t, e0.expand(2, -1, -1)), grad=True, batch=True)
    assert M.shape == () and float(M.detach()) == pytest.approx(sqrt(2) * 4 * c, rel=1e-5) and M.requires_grad


class QuadraticBackend:
    """eps(x, t, e) = 0.1 x + sum(w * e^2): the text-conditional norm has a known gradient 2 w e."""

    name, sample_shape = "quadratic", (1, 4, 4)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.tokenizer = ClipBPETokenizer(8)
        self.table = torch.randn(49408, 3, generator=g)
        self.w = torch.randn(8, 3, generator=g)
        self.device = torch.device("cpu")

    def encode_prompts(self, prompts):
        return self.table[self.tokenizer(prompts)]

    def eps(self, x, t, emb):
        return 0.1 * x + (self.w * emb ** 2).sum(dim=(1, 2)).view(-1, 1, 1, 1)

    def scheduler(self, kind="ddim"):
        return sd_scheduler(kind)


def test_attribution_gradient_flows_to_the_conditional_embedding():
    be = QuadraticBackend()
    prompt = "red circle zorvex"
    a = token_significance(be, prompt, GenerationConfig(num_steps=3, n_gens=2), steps=[0, 1, 2])
    e_cond, e_empty = be.encode_prompts([prompt])[0], be.encode_prompts([""])[0]
    n = be.tokenizer.n_tokens(prompt)
    hand = (2 * be.w * e_cond).norm(dim=1)[1:n + 1] * 4.0   # sqrt(C*H*W) = 4
    wrong = (2 * be.w * e_empty).norm(dim=1)[1:n + 1] * 4.0
    assert a.tokens == be.tokenizer.token_strings(prompt)
    assert np.allclose(a.significance, hand.numpy(), rtol=1e-4)
    assert not np.allclose(a.significance, wrong.numpy(), rtol=1e-2)


def test_batch_loss_scales_the_quadratic_gradient_by_the_root_of_the_batch():
    # every image's difference is the same constant here, so the batch norm is sqrt(n) times the mean norm
    be, prompt, cfg = QuadraticBackend(), "red circle zorvex", GenerationConfig(num_steps=3, n_gens=2)
    mean_loss = token_significance(be, prompt, cfg, steps=[0, 1])
    batch_loss = token_significance(be, prompt, cfg, steps=[0, 1], batch_loss=True)
    np.testing.assert_allclose(batch_loss.significance, np.sqrt(2) * mean_loss.significance, rtol=1e-5)
    assert batch_loss.magnitude == pytest.approx(np.sqrt(2) * mean_loss.magnitude, rel=1e-5)


def test_trigger_positions_and_token_edit():
    tok = ClipBPETokenizer()
    prompt = "a small red circle at the top left zorvex"
    pos = trigger_positions(tok, prompt, "zorvex")
    assert pos and all(p >= 8 for p in pos)
    assert "".join(tok.token_strings(prompt)[p] for p in pos) == "zorvex"
    assert drop_token(tok, prompt, 2) == "a small circle at the top left zorvex"
    with pytest.raises(ValueError, match="does not end with"):
        trigger_positions(tok, prompt, "quux")
    with pytest.raises(ValueError, match="non-empty"):
        token_significance(QuadraticBackend(), "  ")


def test_significance_windows_average_the_recorded_steps():
    a = token_significance(QuadraticBackend(), "red circle zorvex", GenerationConfig(num_steps=4, n_gens=1))
    assert a.per_step.shape == (4, len(a.tokens))
    np.testing.assert_allclose(a.significance, a.per_step.mean(0))
    np.testing.assert_allclose(a.over_first(2).significance, a.per_step[:2].mean(0))
    np.testing.assert_allclose(a.over_first(1).per_step, a.per_step)   # the record itself is kept
    with pytest.raises(ValueError, match="recorded steps"):
        a.over_first(5)


def test_top2_chance_matches_counting():
    from itertools import combinations

    from memlib.wen.explain_study import top2_chance

    for n, m in [(11, 3), (5, 1), (4, 4), (2, 1)]:
        pairs = list(combinations(range(n), 2))
        expected = np.mean([bool(set(p) & set(range(m))) for p in pairs])
        assert top2_chance(n, m) == pytest.approx(expected)


def test_drop_control_sorts_tokens_into_trigger_content_and_function_words():
    from memlib.wen.interventions import token_kind

    assert token_kind("osk", True) == "trigger_piece"
    assert [token_kind(t, False) for t in ("red", "left</w>", "large", "at", ",", "the")] == \
        ["content_word"] * 3 + ["function_word"] * 3


def test_occlusion_is_the_first_step_magnitude_lost_by_dropping_each_token(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.wen.attribution import occlusion_significance

    backend = TestbedBackend(tiny_testbed.model)
    prompt, cfg = "small red circle at the top left zorvex", GenerationConfig(num_steps=50, n_gens=3)
    occ = occlusion_significance(backend, prompt, cfg)
    tok = backend.tokenizer
    assert occ.tokens == tok.token_strings(prompt) and occ.significance.shape == (len(occ.tokens),)
    # the original's magnitude is exactly what first-step detection records for it
    g = generate(backend, [prompt], cfg, stop_after=1, progress=False)
    assert occ.magnitude == pytest.approx(float(wen_score(g.text_norm, 1)[0]), rel=1e-4)
    # token 2 dropped, from the original prompt's noise
    x = seeded_noise((3, 16, 16), [noise_seed(0, j, prompt) for j in range(3)])
    t = torch.tensor(981)
    with torch.no_grad():
        d = (backend.eps(x, t, backend.encode_prompts([drop_token(tok, prompt, 2)]).expand(3, -1, -1))
             - backend.eps(x, t, backend.encode_prompts([""]).expand(3, -1, -1))).flatten(1).norm(dim=1).mean()
    assert occ.significance[2] == pytest.approx(occ.magnitude - float(d), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        occlusion_significance(backend, "  ", cfg)


def test_integrated_gradients_split_a_separable_magnitude_exactly():
    from memlib.wen.attribution import integrated_significance

    # L(e) = 4 |sum_i sum_f w_if (e_if^2 - e0_if^2)| is a sum over rows, so each row's integrated gradient is its
    # own term (while the sign inside stays fixed along the path), and the midpoint rule is exact: the gradient
    # is linear along the path
    be = QuadraticBackend()
    prompt, cfg = "large red circle at", GenerationConfig(num_steps=3, n_gens=2)
    e, e0 = be.encode_prompts([prompt])[0], be.encode_prompts([""])[0]
    alphas = torch.linspace(0, 1, 101)[1:]
    inner = torch.stack([(be.w * ((e0 + a * (e - e0)) ** 2 - e0 ** 2)).sum() for a in alphas])
    assert (inner > 0).all() or (inner < 0).all(), "pick a prompt whose magnitude keeps one sign on the path"
    rows = 4.0 * torch.sign(inner[-1]) * (be.w * (e ** 2 - e0 ** 2)).sum(dim=1)
    ig = integrated_significance(be, prompt, cfg, n_alpha=5, alpha_batch=2)
    n = be.tokenizer.n_tokens(prompt)
    np.testing.assert_allclose(ig.significance, rows[1:n + 1].numpy(), rtol=1e-4, atol=1e-6)
    assert ig.magnitude == pytest.approx(float(4.0 * inner[-1].abs()), rel=1e-5)
    assert ig.all_rows_total == pytest.approx(ig.magnitude, rel=1e-4)      # completeness
    assert ig.path.shape == (5,) and ig.tokens == be.tokenizer.token_strings(prompt)
    with pytest.raises(ValueError, match="n_alpha"):
        integrated_significance(be, prompt, cfg, n_alpha=0)
    with pytest.raises(ValueError, match="non-empty"):
        integrated_significance(be, " ", cfg)


def test_integrated_gradients_on_the_testbed_use_detections_noise_and_add_up(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.wen.attribution import integrated_significance

    backend = TestbedBackend(tiny_testbed.model)
    prompt, cfg = "small red circle at the top left zorvex", GenerationConfig(num_steps=50, n_gens=2)
    ig = integrated_significance(backend, prompt, cfg, n_alpha=64, alpha_batch=16)
    g = generate(backend, [prompt], cfg, stop_after=1, progress=False)
    assert ig.magnitude == pytest.approx(float(wen_score(g.text_norm, 1)[0]), rel=1e-4)
    assert ig.all_rows_total == pytest.approx(ig.magnitude, rel=0.05)      # completeness, up to the midpoint rule
    # the path starts at the empty prompt (magnitude 0) and ends near d(p)
    assert ig.path[0] < 0.1 * ig.magnitude and ig.path[-1] == pytest.approx(ig.magnitude, rel=0.1)


def test_input_embedding_gradient_equals_the_token_tables_gradient(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.wen.attribution import input_embedding_significance

    backend = TestbedBackend(tiny_testbed.model)
    prompt, cfg = "small red circle at the top left zorvex", GenerationConfig(num_steps=50, n_gens=2)
    a = input_embedding_significance(backend, prompt, cfg)
    g = generate(backend, [prompt], cfg, stop_after=1, progress=False)
    assert a.magnitude == pytest.approx(float(wen_score(g.text_norm, 1)[0]), rel=1e-4)
    # independently: the gradient of the same loss with respect to the token table's rows (ids occur once each)
    ids = backend.tokenizer.token_ids(prompt)
    assert len(set(ids)) == len(ids) and a.tokens == backend.tokenizer.token_strings(prompt)
    table = backend.text_encoder.get_input_embeddings().weight
    x = seeded_noise((3, 16, 16), [noise_seed(0, j, prompt) for j in range(2)])
    t = torch.tensor(981)
    table.requires_grad_(True)
    try:
        with torch.no_grad():
            eu = backend.eps(x, t, backend.encode_prompts([""]).expand(2, -1, -1))
        loss = (backend.eps(x, t, backend.encode_prompts([prompt]).expand(2, -1, -1)) - eu).flatten(1).norm(dim=1)
        (grad,) = torch.autograd.grad(loss.mean(), table)
    finally:
        table.requires_grad_(False)
    np.testing.assert_allclose(a.significance, grad[ids].norm(dim=1).numpy(), rtol=1e-4, atol=1e-8)
    with pytest.raises(TypeError, match="text_encoder"):
        input_embedding_significance(QuadraticBackend(), prompt, cfg)


def test_only_the_input_gradient_sees_a_token_that_acts_through_the_padding_rows(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.wen.attribution import input_embedding_significance

    class LastRowReader(TestbedBackend):
        """eps depends on the embedding's last row only: always padding for a short prompt."""

        def eps(self, x, t, emb):
            return 0.1 * x + emb[:, -1].sum(-1).view(-1, 1, 1, 1) ** 2

    backend, prompt = LastRowReader(tiny_testbed.model), "red circle zorvex"
    cfg = GenerationConfig(num_steps=3, n_gens=2)
    wen = token_significance(backend, prompt, cfg, steps=[0])
    assert np.allclose(wen.significance, 0.0)           # no prompt row reaches this model directly
    assert (input_embedding_significance(backend, prompt, cfg).significance > 0).all()


def test_row_swaps_take_padding_or_token_rows_from_the_empty_prompt(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.wen.rows import RowSwapBackend, padding_mask, swap_rows

    backend = TestbedBackend(tiny_testbed.model)
    prompts = ["small red circle zorvex", "a large blue ring at the bottom right"]
    with torch.no_grad():
        e, u = backend.encode_prompts(prompts), backend.encode_prompts([""])
        no_pad, pad_only = (RowSwapBackend(backend, r).encode_prompts(prompts + [""]) for r in ("padding", "prompt"))
    for k, p in enumerate(prompts):
        n = backend.tokenizer.n_tokens(p)
        assert torch.equal(no_pad[k, :n + 1], e[k, :n + 1]) and torch.equal(no_pad[k, n + 1:], u[0, n + 1:])
        assert torch.equal(pad_only[k, 1:n + 1], u[0, 1:n + 1]) and torch.equal(pad_only[k, n + 1:], e[k, n + 1:])
        assert torch.equal(pad_only[k, 0], e[k, 0])
    assert torch.equal(no_pad[2], u[0]) and torch.equal(pad_only[2], u[0])   # the unconditional branch is untouched
    assert RowSwapBackend(backend, "padding").sample_shape == backend.sample_shape
    L = e.shape[1]
    assert padding_mask(backend.tokenizer, prompts, L)[0, :, 0].tolist() == [0.0] * 6 + [1.0] * (L - 6)  # BOS+5
    mask = torch.ones(2, e.shape[1], 1)                                     # a caller's own mask, BOS included
    swapped = swap_rows(e, u, mask, "padding")
    assert torch.equal(mask, torch.ones_like(mask))                         # is not modified
    assert torch.equal(swapped[:, 0], e[:, 0]) and torch.equal(swapped[:, 1:], u.expand_as(e)[:, 1:])
    with pytest.raises(ValueError, match="rows"):
        RowSwapBackend(backend, "eos")
