"""Notebook 05 on a further testbed seed (PRSS, Chen et al., CVPR 2025): the main seed's operating points applied
unchanged, PRSS's own dev-chosen points, no mitigation and the content-caption reference, each paired against no
mitigation on that seed. The quick run leaves this section out; here it runs on the session's tiny testbed (the
tests' shared checkpoint and copy detector stand in for another seed's: training those takes minutes)."""
import pytest

from memlib.prss.curves import OWN_ON_MORE_SEEDS, curve_specs
from memlib.prss.results import OWN, TRANSFER
from memlib.prss.seeds import run_seed
from memlib.prss.study import PRSSStudyConfig
from memlib.testbed.build import TestbedRef


@pytest.mark.slow
def test_a_further_seed_runs_the_transfer_and_its_own_operating_points(tiny_testbed):
    ref = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)   # the tiny_testbed fixture's
    cfg = PRSSStudyConfig(testbed=ref, n_gens=1, num_steps=3, max_prompts_per_group=1, heldout_prompts=1,
                          lambda_points=2, dev_gens=1, grid_prompts=0, progress=False)
    specs = curve_specs(cfg)
    tau, M = (0.1, 0.1, 0.1), (0.2, 0.2, 0.2)
    transfer = {"PR alone": (0.05, tau, M), "PRSS": (0.05, tau, M), "PRSS, may drop trigger": (0.05, tau, M)}
    run = run_seed(cfg, ref.seed, specs, transfer, cfg.generation_config())
    assert run.seed == ref.seed and run.checkpoint == tiny_testbed.folder.name and run.transfer == {c: 0.05 for c in transfer}
    assert set(run.rows) == {"none"} | {f"{c}, {TRANSFER}" for c in transfer} | {f"{c}, {OWN}" for c in
                                                                                   OWN_ON_MORE_SEEDS}
    assert set(run.operating) == set(OWN_ON_MORE_SEEDS) and all(lam in run.lambdas for lam in run.operating.values())
    for curve, lam in run.operating.items():
        assert run.rows[f"{curve}, {OWN}"].value == lam and len(run.dev_rows[curve]) == len(run.lambdas)
    for curve in transfer:
        assert run.rows[f"{curve}, {TRANSFER}"].value == 0.05
    assert run.content.method == "content_caption" and "heldout" not in run.content.n_prompts
    m = run.to_metrics()
    assert set(m["points"]) == set(run.rows) - {"none"} and m["nn_chance"] == run.content.nn_is_planted["memorized"]
    for p in m["points"].values():
        for k in ("copy_rate", "replication", "clip_phrasings"):
            pd = p["vs_none"][k]
            assert pd["ci95"][0] <= pd["estimate"] <= pd["ci95"][1] and pd["n_prompts"] == 3
    assert len(run.all_rows()) == len(run.rows) + 1 + sum(map(len, run.dev_rows.values()))
