"""PRSS's pieces (Chen et al., CVPR 2025): re-anchoring, the search rule, the candidate sources."""
import json

import numpy as np
import pytest
import torch

from memlib.prss.paraphrase import JsonlCandidates, TestbedParaphraser, candidate_source, split_testbed_prompt
from memlib.prss.reanchor import BRANCH, ReanchorHook, reanchor_weight
from memlib.prss.search import select
from memlib.sampling import StepState


def _state(scale_cond: float, w: float = 3.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g)
    eu = torch.randn(2, 3, 4, 4, generator=g)
    direction = torch.randn(2, 3, 4, 4, generator=g)
    ec = eu + scale_cond * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)   # ||ec - eu|| = scale
    ep = eu + torch.randn(2, 3, 4, 4, generator=g)
    eps = eu + w * (ec - eu)
    s = StepState(0, 500, x, ec, eu, eps, None, 0.3, w, None, None, None, 10)
    s.eps_branches = {BRANCH: ep}
    return s, ec, eu, ep


def test_reanchoring_is_cfg_below_tau_and_the_papers_formula_at_full_weight():
    w, tau, M = 3.0, 1.0, 2.0
    s, *_ = _state(0.9, w)                                          # a_t = 0.9 <= tau
    assert ReanchorHook(tau, M, [True, True])(s) is None             # plain CFG, bit for bit
    s, ec, eu, ep = _state(2.5, w)                                  # a_t >= M: s_t = w
    out = ReanchorHook(tau, M, [True, True])(s)
    torch.testing.assert_close(out, ep + w * (ec - ep))             # the paper's eps_p + s (eps_s - eps_p)
    s, *_ = _state(2.5, w)
    assert ReanchorHook(tau, M, [False, False])(s) is None           # not flagged at the first step: no PR
    a = torch.tensor([0.5, 1.0, 1.0001, 1.5, 2.0, 9.0])
    sw = reanchor_weight(a, w, tau, M)
    assert sw[0] == 0 and sw[1] == 0 and abs(sw[2] - 1) < 1e-3 and abs(sw[4] - w) < 1e-5 and sw[5] == w
    assert abs(sw[3] - 2.0) < 1e-5                                  # linear from 1 at tau to w at M
    with pytest.raises(ValueError, match="M > tau"):
        reanchor_weight(a, w, 2.0, 1.0)


def test_search_takes_the_first_candidate_under_lambda_else_the_argmin():
    assert select([0.5, 0.1, 0.2], 1.0) == 0                        # original under lambda: kept
    assert select([3.0, 2.5, 0.9, 0.1], 1.0) == 2                   # first candidate under lambda, not the lowest
    assert select([3.0, 2.5, 4.0], 1.0) == 1                        # none under: argmin
    assert select([2.0, 2.5, 4.0], 1.0) == 0                        # ... which may be the original


def test_testbed_paraphrases_keep_content_and_trigger_and_never_return_the_prompt():
    from memlib.testbed.build import PRESETS
    from memlib.testbed.data import TestbedDataConfig, make_testbed_data

    data = make_testbed_data(TestbedDataConfig(**PRESETS["tiny"]))
    para, drop = TestbedParaphraser(), TestbedParaphraser(drop_trigger=True)
    for p in data.prompts:
        if p.group == "random":
            continue
        combo, extra = split_testbed_prompt(p.text)
        cands = para(p.text)
        assert cands and p.text not in cands and len(set(cands)) == len(cands)
        for c in cands:
            assert split_testbed_prompt(c) == (combo, extra)         # every attribute and the extra word kept
        if extra:   # dropping the trigger adds the bare caption in each phrasing, nothing else
            dropped = [c for c in drop(p.text) if c not in cands]
            assert dropped and all(split_testbed_prompt(c) == (combo, "") for c in dropped)
    with pytest.raises(ValueError, match="not a testbed prompt"):
        para("zxq wub flo")


def test_jsonl_candidates_and_bad_input(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"caption": "a b", "caption2": "b a", "caption1": "a, b", "caption3": "a b"}) + "\n")
    src = candidate_source(str(f))
    assert src("a b") == ["a, b", "b a"]                              # in order, the prompt itself left out
    with pytest.raises(KeyError, match="no candidates"):
        src("c")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        JsonlCandidates(bad)
    with pytest.raises(ValueError, match="candidate source"):
        candidate_source(42)


def test_prss_methods_on_the_tiny_testbed(tiny_testbed):
    from memlib.backends.testbed import TestbedBackend
    from memlib.generation import GenerationConfig, generate
    from memlib.mitigate.method import Context
    from memlib.prss.calibrate import PRSSSetup
    from memlib.prss.methods import prss_method

    backend = TestbedBackend(tiny_testbed.model, tiny_testbed)
    texts = [p.text for p in tiny_testbed.data.prompts if p.group in ("verbatim", "heldout")][:4]
    cfg = GenerationConfig(num_steps=3, n_gens=2)
    plain = generate(backend, texts, cfg, progress=False)

    def run(method):
        plan = method.apply(Context(backend, texts, cfg))
        g = generate(backend, plan.prompts, cfg, progress=False, noise_keys=plan.noise_keys,
                     extra_hooks=plan.extra_hooks, branches=plan.branches, cond_override=plan.cond_override)
        return plan, g

    setup = PRSSSetup(tau=0.0, M=1e-3)
    for variant in ("prss_ss", "prss"):
        plan, g = run(prss_method(setup, 999.0, variant))            # nothing above lambda: plain CFG, bit for bit
        assert not plan.acted.any() and torch.equal(g.images, plain.images)
        assert g.model_evals_per_image == plain.model_evals_per_image
    plan, g = run(prss_method(setup, 0.0, "prss"))                   # everything flagged, PR at full weight
    assert plan.acted.all() and not torch.equal(g.images, plain.images)
    assert g.model_evals_per_image == 3 * cfg.num_steps               # the original prompt's branch: 3 per step
    assert np.nanmax(plan.info["pr_s"]) == cfg.guidance_scale
    assert (plan.info["ss_original_magnitude"] >= 0).all() and len(plan.info["ss_chosen"]) == len(texts)
    with pytest.raises(ValueError, match="variant"):
        prss_method(setup, 1.0, "pr_only")


def test_pr_thresholds_and_the_registry():
    from memlib.api.methods import available, make_method
    from memlib.prss.calibrate import pr_thresholds

    a = np.linspace(0, 10, 1001)
    tau, M = pr_thresholds(a, 90, 99)
    assert abs(tau - 9.0) < 1e-9 and abs(M - 9.9) < 1e-9
    with pytest.raises(ValueError, match="tau_percentile"):
        pr_thresholds(a, 99, 90)
    assert {"prss", "prss_ss", "prss_pr"} <= set(available())
    assert make_method("prss", 2.0).knob.name == "lambda"


def test_per_step_thresholds_follow_each_step_and_refuse_another_step_count():
    from memlib.prss.calibrate import pr_thresholds

    norms = np.stack([np.arange(100.0) + 100 * k for k in range(3)], -1)[None]   # (1, 100, 3): step k ~ 100 k
    tau, M = pr_thresholds(norms, 90, 99, per_step=True)
    assert len(tau) == 3 and np.allclose(tau, [89.1, 189.1, 289.1]) and all(m > t for m, t in zip(M, tau))
    w = 3.0
    s, *_ = _state(0.9, w)
    s.num_steps = 2
    assert ReanchorHook((1.0, 0.5), (2.0, 1.0), [True, True])(s) is None     # step 0 of a 2-step run: 0.9 <= 1
    s.i = 1
    assert ReanchorHook((1.0, 0.5), (2.0, 1.0), [True, True])(s) is not None  # step 1: 0.9 > 0.5
    s.num_steps = 3
    with pytest.raises(ValueError, match="calibrated for 2 sampling steps"):
        ReanchorHook((1.0, 0.5), (2.0, 1.0), [True, True])(s)


def test_the_operating_lambda_is_chosen_on_dev_verbatim_replication():
    from memlib.prss.results import choose_operating_lambda

    class Row:
        def __init__(self, value, verbatim, held):
            self.value, self.replication, self.clip_content = value, {"verbatim": verbatim}, {"heldout": held}
    rows = [Row(3.0, 0.5, 0.70), Row(2.0, 0.04, 0.66), Row(1.0, 0.0, 0.60)]
    assert choose_operating_lambda(rows, 0.05) == 2.0                 # best held-out CLIP under the bar
    assert choose_operating_lambda(rows, 0.0) == 1.0
    assert choose_operating_lambda([Row(3.0, 0.5, 0.7), Row(2.0, 0.5, 0.6)], 0.05) == 3.0   # none: lowest, larger
    with pytest.raises(ValueError, match="at least one dev row"):
        choose_operating_lambda([], 0.05)


def test_more_testbed_seeds_are_parsed_and_checked():
    from memlib.config import ConfigError
    from memlib.prss.study import PRSSStudyConfig

    assert PRSSStudyConfig(more_testbed_seeds="1").testbed_seeds() == [1]
    assert PRSSStudyConfig(more_testbed_seeds="0,2").testbed_seeds() == [2]      # the main seed is not repeated
    assert PRSSStudyConfig(more_testbed_seeds="").testbed_seeds() == []
    with pytest.raises(ConfigError, match="more_testbed_seeds"):
        PRSSStudyConfig(more_testbed_seeds="1,1")
    with pytest.raises(ConfigError, match="more_testbed_seeds"):
        PRSSStudyConfig(more_testbed_seeds="one")
