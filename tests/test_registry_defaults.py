"""The registry's paper methods are their notebooks' operating points: with no knob value, ``wen_pe``, ``amg`` and
PRSS's variants run at the value the notebook chose on its development half, with the notebook's settings and
calibration. Each committed metrics file (figures/03_mitigation, 04_amg, 05_prss) is held against the constants
in the methods modules, so a rerun that chooses differently fails here until the constant follows it."""
import ast
import json
from types import SimpleNamespace

import pytest
import torch

from memlib.api.methods import describe, make_method
from memlib.paths import repo_root


def _committed(stem: str) -> tuple[dict, dict]:
    doc = json.loads((repo_root() / "figures" / stem / "metrics.json").read_text())
    return doc["metrics"], doc["provenance"]["parameters"]


def _notebook_parameters(stem: str) -> dict:
    """The literal values of the notebook's parameters cell (what a run without overrides uses)."""
    cells = json.loads((repo_root() / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_wen_pe_runs_at_notebook_03s_operating_point():
    from memlib.wen.methods import PE_L_TARGET, PE_L_TARGET_GENS, PE_L_TARGET_STEPS

    m, params = _committed("03_mitigation")
    assert make_method("wen_pe").value == describe("wen_pe")["default"] == PE_L_TARGET == m["pe_operating_l_target"]
    # the knob is the joint first-step magnitude over a prompt's noises: the value holds at the notebook's counts
    assert (m["n_gens"], m["num_steps"]) == (params["n_gens"], params["num_steps"]) == (PE_L_TARGET_GENS,
                                                                                         PE_L_TARGET_STEPS)


def test_amg_is_notebook_04s_main():
    from memlib.amg.methods import C3_KNOB, MAIN_C3, MAIN_CALIBRATION, MAIN_PERCENTILE, main_settings
    from memlib.amg.study import AMGStudyConfig

    m, params = _committed("04_amg")
    main = main_settings()
    assert make_method("amg").value == describe("amg")["default"] == MAIN_C3 == m["main_c3"]
    assert main.schedule == m["main_schedule"] and main.c3 == m["main_c3"]
    assert (main.c1, main.c2) == (params["c1"], params["c2"])
    committed = AMGStudyConfig(**{k: params[k] for k in ("num_steps", "guidance_scale", "gen_batch_size", "seed")})
    assert committed.generation_config(params["calib_gens"]) == MAIN_CALIBRATION
    assert params["calib_percentile"] == MAIN_PERCENTILE and params["max_prompts_per_group"] == 0
    assert tuple(float(v) for v in params["c3_sweep"].split(",")) == C3_KNOB.sweep
    # a run of the notebook as it stands builds the same Main: its config's defaults and its parameters cell
    cfg = AMGStudyConfig()
    assert cfg.generation_config(cfg.calib_gens) == MAIN_CALIBRATION and cfg.calib_percentile == MAIN_PERCENTILE
    assert (cfg.c1, cfg.c2) == (main.c1, main.c2) and cfg.c3_sweep == params["c3_sweep"]
    cell = _notebook_parameters("04_amg")
    for name in ("num_steps", "guidance_scale", "gen_batch_size", "seed", "calib_gens", "calib_percentile", "c1",
                 "c2", "c3_sweep", "max_prompts_per_group"):
        assert cell[name] == getattr(cfg, name), name


def test_the_registrys_amg_calibrates_and_builds_as_notebook_04_does(monkeypatch):
    """``testbed_setup`` (what the registry's ``amg`` runs) asks for Main's calibration and settings."""
    import memlib.amg.methods as amg
    from memlib.amg.threshold import Threshold

    asked = []
    fitted = Threshold("time", 0.7, 0.9, 0.001)
    monkeypatch.setattr(amg, "calibrate_testbed", lambda backend, gen, percentile, *a, **k:
                        asked.append((gen, percentile, a, k)) or SimpleNamespace(threshold=fitted))
    data = SimpleNamespace(images=torch.rand(4, 3, 2, 2), captions=["a", "b", "c", "d"])
    setup = amg.testbed_setup(SimpleNamespace(testbed=SimpleNamespace(data=data)))
    assert asked == [(amg.MAIN_CALIBRATION, amg.MAIN_PERCENTILE, (), {})]   # every held-out dev prompt
    assert setup.settings == amg.main_settings() and setup.threshold == fitted and setup.captions == data.captions


def test_prss_variants_run_at_notebook_05s_operating_points(monkeypatch):
    import memlib.prss.methods as prss
    from memlib.prss.study import PRSSStudyConfig

    m, params = _committed("05_prss")
    assert make_method("prss").value == prss.PRSS_LAMBDA == m["prss_lambda"] == m["operating"]["PRSS"]["lambda"]
    assert make_method("prss_pr").value == prss.PR_ALONE_LAMBDA == m["pr_alone_lambda"]
    assert make_method("prss_ss").value == m["prss_lambda"]   # SS alone: at PRSS's lambda (no point of its own)
    assert (params["tau_percentile"], params["m_percentile"], params["per_step_thresholds"], params["source"]) == (
        prss.TAU_PERCENTILE, prss.M_PERCENTILE, prss.PER_STEP_THRESHOLDS, "testbed")
    committed = PRSSStudyConfig(**{k: params[k] for k in ("n_gens", "num_steps", "guidance_scale", "gen_batch_size",
                                                          "seed")})
    assert prss.calibration_config(committed.generation_config()) == committed.generation_config()
    cfg, cell = PRSSStudyConfig(), _notebook_parameters("05_prss")
    for name in ("n_gens", "gen_batch_size", "seed", "tau_percentile", "m_percentile", "per_step_thresholds"):
        assert cell[name] == getattr(cfg, name) == params[name], name
    # the registry's variants calibrate tau and M as the notebook does, at the user's steps and guidance
    asked = []

    def setup(backend, gen, source, tau_p, m_p, per_step):
        asked.append((gen, source, tau_p, m_p, per_step))
        raise StopIteration

    monkeypatch.setattr(prss, "testbed_setup", setup)
    user = committed.generation_config().__class__(num_steps=50, guidance_scale=5.0, n_gens=1, batch_size=7, seed=3)
    for variant in prss.VARIANTS:
        with pytest.raises(StopIteration):
            make_method(variant).build(SimpleNamespace(backend=None, gen_cfg=user), 1.0)
    gen = asked[0][0]
    assert (gen.n_gens, gen.seed, gen.batch_size, gen.num_steps, gen.guidance_scale) == (4, 0, 128, 50, 5.0)
    assert set(a[1:] for a in asked) == {("testbed", 95.0, 99.9, True)}
