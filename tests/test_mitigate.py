"""The mitigation harness (memlib.mitigate) and Wen et al.'s two mitigations on tiny models."""
import pytest
import torch

from memlib.api.methods import make_method, sweep
from memlib.backends.testbed import TestbedBackend
from memlib.generation import GenerationConfig
from memlib.mitigate import run as run_module
from memlib.mitigate.baselines import augment_prompts
from memlib.mitigate.columns import Evaluator, MethodRow
from memlib.mitigate.evalset import content_caption, evaluation_prompts
from memlib.mitigate.run import run_method
from memlib.mitigate.similarity import SimilarityIndex, pixel_ncc
from memlib.testbed.build import TestbedRef
from memlib.testbed.data import Prompt
from memlib.wen.mitigate_pe import optimize_prompt_embeddings

TINY = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)
GEN = GenerationConfig(num_steps=3, n_gens=2)


@pytest.fixture(scope="module")
def harness(tiny_testbed):
    clip = TINY.load_clip(tiny_testbed, progress=False)
    prompts = evaluation_prompts(tiny_testbed.data, "all", max_per_group=3)
    return TestbedBackend(tiny_testbed.model, tiny_testbed), Evaluator.for_testbed(TINY, tiny_testbed, clip), prompts


def test_a_method_row_on_a_tiny_model_counts_its_prompts_and_costs(harness):
    backend, ev, prompts = harness
    run = run_method(backend, make_method("random_token", 2), prompts, ev, GEN, chunk=4, progress=False)
    row = run.row
    assert isinstance(row, MethodRow) and row.method == "random_token" and row.value == 2
    groups = [p.group for p in prompts]
    assert row.n_prompts == {g: groups.count(g) for g in set(groups)}
    assert run.images.shape[:2] == (len(prompts), GEN.n_gens) and run.text_norm.shape[2] == GEN.num_steps
    assert row.evals_per_image == pytest.approx(2 * GEN.num_steps)   # two CFG branches per step
    assert row.acted_heldout == 1.0 and 0 <= row.replication["memorized"] <= 1
    assert 0 <= row.copy_rate["memorized"] <= 1 and 0 <= row.lowpass_replication["memorized"] <= 1
    copies = row.replication["verbatim"] * groups.count("verbatim") * GEN.n_gens
    assert abs(copies - round(copies)) < 1e-6   # a share of prompts x generations
    assert row.frechet_floor["heldout"] >= 0 and set(row.clip_content) == {"memorized", "heldout"}
    flat = row.to_metrics()
    assert flat["replication_ci_memorized"][0] <= flat["replication_memorized"] <= flat["replication_ci_memorized"][1]


def test_the_cache_reuses_chunks_and_a_changed_checkpoint_invalidates(harness, tiny_testbed, monkeypatch):
    backend, ev, prompts = harness
    calls = []
    real = run_module.generate
    monkeypatch.setattr(run_module, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    method = make_method("word_repeat", 1)
    first = run_method(backend, method, prompts, ev, GEN, chunk=4, progress=False)
    n = len(calls)
    again = run_method(TestbedBackend(tiny_testbed.model, tiny_testbed), method, prompts, ev, GEN, chunk=4,
                       progress=False)
    assert len(calls) == n and torch.equal(first.images, again.images)
    changed = type(tiny_testbed.model)(tiny_testbed.model.cfg)
    changed.load_state_dict(tiny_testbed.model.state_dict())
    with torch.no_grad():
        next(changed.unet.parameters()).add_(0.1)
    other = run_method(TestbedBackend(changed.eval(), tiny_testbed), method, prompts, ev, GEN, chunk=4,
                       progress=False)
    assert len(calls) == 2 * n and not torch.equal(first.images, other.images)


def test_bad_method_names_and_knob_values_give_clear_errors():
    with pytest.raises(ValueError, match="unknown mitigation method 'random_tokens'.*random_token"):
        make_method("random_tokens", 2)
    with pytest.raises(ValueError, match="knob 'tokens' must be an integer"):
        make_method("random_token", 2.5)
    with pytest.raises(ValueError, match="outside"):
        make_method("lower_guidance", -1.0)
    with pytest.raises(ValueError, match="finite"):
        make_method("wen_pe", float("nan"))
    with pytest.raises(ValueError, match="unknown mitigation method"):
        sweep("nope")
    assert [m.value for m in sweep("random_token")] == [1, 2, 4, 6, 8]   # Somepalli et al.'s sweep


class _Linear:
    """A backend whose noise prediction is the sum of the prompt embedding's non-BOS rows: L_p is known."""
    sample_shape, tokenizer, device = (1, 2, 2), None, torch.device("cpu")
    table = {"": 0.0, "a": 1.0, "b": 3.0}

    def encode_prompts(self, prompts):
        return torch.stack([torch.full((3, 2), self.table[p]) for p in prompts])

    def eps(self, x, t, emb):
        return emb[:, 1:].sum((1, 2)).view(-1, 1, 1, 1) * torch.ones_like(x)

    def scheduler(self, kind="ddim"):
        from memlib.schedule import sd_scheduler
        return sd_scheduler(kind)


def test_pe_stops_early_keeps_bos_and_converged_rows_untouched():
    be, gen = _Linear(), GenerationConfig(num_steps=5, n_gens=4)
    # L_p = |sum of rows 1..2| * sqrt(n * 4): 'a' starts at 4 * 4 = 16, 'b' at 48
    both = optimize_prompt_embeddings(be, ["a", "b"], gen, l_target=14.0)
    assert both.loss_initial.tolist() == pytest.approx([16.0, 48.0])
    assert both.iterations[0] < both.iterations[1] <= 10 and both.loss_last[0] <= 14.0
    e0 = be.encode_prompts(["a", "b"])
    assert torch.equal(both.embeddings[:, 0], e0[:, 0])                      # BOS fixed
    alone = optimize_prompt_embeddings(be, ["a"], gen, l_target=14.0)
    # 'b' kept stepping after 'a' converged; 'a' is exactly what it was when it stopped (no weight decay drift)
    assert torch.equal(alone.embeddings[0], both.embeddings[0]) and alone.iterations[0] == both.iterations[0]
    none = optimize_prompt_embeddings(be, ["a", "b"], gen, l_target=100.0)
    assert none.iterations.tolist() == [0, 0] and torch.equal(none.embeddings, e0)
    capped = optimize_prompt_embeddings(be, ["b"], gen, l_target=0.0)
    assert capped.iterations[0] == 10 and not capped.converged[0]
    assert capped.evals_per_image == pytest.approx(1 + 10 + 2 * 10)


def test_pe_leaves_prompts_under_l_target_bit_identical_to_plain_cfg(harness):
    backend, ev, prompts = harness
    plain = run_method(backend, make_method("none"), prompts, ev, GEN, chunk=4, progress=False)
    pe = run_method(backend, make_method("wen_pe", 999.0), prompts, ev, GEN, chunk=4, progress=False)
    assert (pe.info["iterations"] == 0).all() and not pe.info["acted"].any()
    assert torch.equal(pe.images, plain.images) and pe.row.acted_heldout == 0.0
    acted = run_method(backend, make_method("wen_pe", 0.0), prompts, ev, GEN, chunk=4, progress=False)
    assert (acted.info["iterations"] > 0).all() and not torch.equal(acted.images, plain.images)
    assert acted.row.evals_per_image > plain.row.evals_per_image


def test_augmentations_are_seeded_per_prompt_and_keep_the_original_noise(harness):
    backend, ev, prompts = harness
    tok = backend.tokenizer
    a = augment_prompts(["large red circle at the top left xq"], "token", 4, tok)
    assert a == augment_prompts(["other", "large red circle at the top left xq"], "token", 4, tok)[1:]
    assert len(a[0].split()) == 8 + 4
    rep = augment_prompts(["red circle"], "repeat", 3, tok)[0].split()
    assert len(rep) == 5 and set(rep) <= {"red", "circle"}
    plan = make_method("random_number", 2).apply(run_module.Context(backend, ["red circle"], GEN))
    assert plan.noise_keys == ["red circle"] and plan.prompts != ["red circle"]


def test_similarity_index_is_differentiable_and_agrees_with_the_replication_index(tiny_testbed):
    from memlib.metrics import ReplicationIndex

    images = tiny_testbed.data.images
    idx = SimilarityIndex(images)
    q = (images[:5] + 0.05 * torch.randn_like(images[:5])).requires_grad_(True)
    val, rows = idx.topk_ncc(q, k=3)
    ref = ReplicationIndex(images, tiny_testbed.data.cluster).query(q.detach())
    assert torch.allclose(idx.ncc_to(q, torch.as_tensor(ref.nn_index)).detach(),
                          torch.as_tensor(ref.copy_cosine), atol=1e-5)
    nl2, nn = idx.nl2(q, k=4, alpha=0.5)
    assert (nl2 <= 2 + 1e-6).all()   # the nearest distance is at most the mean of the k nearest
    (val[:, 0].sum() + nl2.sum()).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert torch.allclose(pixel_ncc(images[:2], images[:2]), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="values each"):
        idx.ncc(torch.zeros(2, 5))


def test_content_captions_drop_trigger_and_style_and_halves_do_not_overlap(tiny_testbed):
    assert content_caption(Prompt("small red circle at the top left zqx", "verbatim", trigger="zqx")) == \
        "small red circle at the top left"
    assert content_caption(Prompt("small red circle at the top left sketch", "image_dup")) == \
        "small red circle at the top left"
    dev = evaluation_prompts(tiny_testbed.data, "dev")
    test = evaluation_prompts(tiny_testbed.data, "test")
    assert not {p.cluster for p in dev if p.cluster >= 0} & {p.cluster for p in test if p.cluster >= 0}
    assert {p.half for p in dev} == {"dev"} and {p.half for p in test} == {"test"}
    with pytest.raises(ValueError, match="evaluation groups"):
        evaluation_prompts(tiny_testbed.data, "test", groups=("random",))


def test_magnitude_filter_drops_samples_and_with_nothing_dropped_matches_the_plain_run(tiny_testbed):
    from memlib.wen.filter_train import round_to_float16, train_filtered

    keep_all = train_filtered(TINY, 1e6, base=tiny_testbed, progress=False)
    assert keep_all.train_state["loss_state"]["dropped"].sum() == 0
    reloaded = train_filtered(TINY, 1e6, base=tiny_testbed, progress=False)   # from disk, float16 weights
    assert reloaded.meta["stored_dtype"] == "float16"
    plain = round_to_float16(tiny_testbed).model.state_dict()
    for k, v in reloaded.model.state_dict().items():
        assert torch.equal(v, plain[k]), k
    strict = train_filtered(TINY, 1e-3, base=tiny_testbed, progress=False)
    state = strict.train_state["loss_state"]
    assert state["dropped"].sum() > 0 and state["skips"].sum() == state["dropped"].sum()
    assert not torch.equal(next(strict.model.unet.parameters()), next(reloaded.model.unet.parameters()))
    with pytest.raises(ValueError, match="positive, finite"):
        train_filtered(TINY, float("nan"), base=tiny_testbed)
