"""memlib.config and the notebooks' configs: unknown, mistyped, out-of-range and non-finite parameters (papermill's
injected NaN included) stop a run naming the parameter."""
import dataclasses
import math

import pytest

from memlib.config import Config, ConfigError, check_range
from memlib.notebook_parameters import config_from_notebook
from memlib.testbed.evaluate import TestbedNotebookConfig


@dataclasses.dataclass
class Params(Config):
    scale: float = 3.0
    steps: int = 10
    seed: int = 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_rejected_by_name(bad):
    with pytest.raises(ConfigError, match="'guidance_scale'.*finite"):
        check_range("guidance_scale", bad, 0.0, 50.0)
    with pytest.raises(ConfigError, match="'guidance_scale'.*finite"):
        check_range("guidance_scale", bad)   # no bounds: NaN compares False with any bound
    with pytest.raises(ConfigError, match="'scale'"):
        Params(scale=bad)   # a float field without a range check


def test_unknown_parameter_check_survives_a_nan_papermill_injects():
    from papermill.translators import PythonTranslator

    from memlib.notebook_parameters import config_from_notebook, parameters_of

    injected = PythonTranslator.codify({"steps": 4, "scale": math.nan, "stpes": 5})
    assert "float('nan')" in injected
    ns = {"In": ["scale = 3.0\nsteps = 10\nseed = 0\n", injected, "cfg = make(Params, globals())"],
          "scale": math.nan, "steps": 4, "stpes": 5, "seed": 0, "cfg": 1}
    assert set(parameters_of(ns)) == {"scale", "steps", "stpes", "seed"}
    with pytest.raises(ConfigError, match="unknown parameter.*stpes"):
        config_from_notebook(Params, ns)
    ns = {"In": ["scale = 3.0\nsteps = 10\nseed = 0\n", PythonTranslator.codify({"scale": -math.inf})],
          "scale": -math.inf, "steps": 10, "seed": 0}
    with pytest.raises(ConfigError, match="'scale'.*finite"):
        config_from_notebook(Params, ns)


@pytest.mark.parametrize("seed", [2**70, -1])
def test_seed_out_of_range_names_the_parameter(seed):
    from memlib.generation import GenerationConfig
    from memlib.wen.detection_study import DetectionConfig

    with pytest.raises(ConfigError, match="'seed'.*out of range"):
        GenerationConfig(seed=seed)
    with pytest.raises(ConfigError, match="'testbed_seed'.*out of range"):
        DetectionConfig.from_params({"testbed_seed": seed})
    GenerationConfig(seed=2**63 - 1)  # the largest accepted: torch and numpy both take it


def test_notebook_config_rejects_unknown_and_mistyped_parameters():
    ok = config_from_notebook(TestbedNotebookConfig, {"seed": 1, "In": [], "np": __import__("numpy")})
    assert ok.seed == 1
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['num_step'\]"):
        config_from_notebook(TestbedNotebookConfig, {"num_step": 5})
    with pytest.raises(ConfigError, match="'n_gens'.*must be an integer"):
        TestbedNotebookConfig(n_gens="4")
    with pytest.raises(ConfigError, match="'guidance_scale'.*out of range"):
        TestbedNotebookConfig(guidance_scale=-1.0)
    with pytest.raises(ConfigError, match="'testbed_preset'.*choose one of"):
        TestbedNotebookConfig.from_params({"testbed_preset": "huge"})
    with pytest.raises(ConfigError, match="'retrain'.*must be bool"):
        TestbedNotebookConfig(retrain="yes")


def test_parameters_are_the_literal_assignment_cells_under_ipython():
    from memlib.notebook_parameters import parameters_of

    ns = {"In": ["", "seed = 1  # c\nsteps = -2", "# Parameters\nseed = 5\nbogus = 'x'\n",
                 "from memlib import x\ncfg = make(globals())", "NB = '00'\nt = time.time()"],
          "seed": 5, "steps": -2, "bogus": "x", "cfg": object(), "NB": "00", "t": 1.0}
    assert parameters_of(ns) == {"seed": 5, "steps": -2, "bogus": "x"}


@pytest.mark.parametrize("cls_path, bad, pattern", [
    ("memlib.wen.detection_study:DetectionConfig", {"max_gens": 1}, "'max_gens'.*out of range"),
    ("memlib.wen.detection_study:DetectionConfig", {"num_steps": 5}, "'num_steps'.*out of range"),
    ("memlib.wen.detection_study:DetectionConfig", {"memorized_threshold": "high"}, "'memorized_threshold'.*number"),
    ("memlib.wen.detection_study:DetectionConfig", {"backend_id": "x"}, r"unknown parameter\(s\) \['backend_id'\]"),
    ("memlib.wen.explain_study:ExplainConfig", {"attribution_steps": 80}, "'attribution_steps'.*out of range"),
    ("memlib.wen.explain_study:ExplainConfig", {"interactive": 1}, "'interactive'.*must be bool"),
    ("memlib.wen.explain_study:ExplainConfig", {"n_gen": 4}, r"unknown parameter\(s\) \['n_gen'\]"),
    ("memlib.testbed.evaluate:TestbedNotebookConfig", {"testbed_train_steps": 0},
     "'testbed_train_steps'.*out of range"),
])
def test_every_notebook_config_rejects_bad_values(cls_path, bad, pattern):
    import importlib

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    with pytest.raises(ConfigError, match=pattern):
        cls.from_params(bad)


def test_detection_positive_groups_are_validated():
    from types import SimpleNamespace

    import numpy as np

    from memlib.wen.detection_study import DetectionConfig, PromptSet, _choose_positives

    with pytest.raises(ConfigError, match="positive_groups"):
        DetectionConfig(positive_groups="verbatim,bogus")
    with pytest.raises(ConfigError, match="positive_groups"):
        DetectionConfig(positive_groups="verbatim_knob")   # a dose group, not a planted positive
    sets = {g: PromptSet(g, "positive", ["p"], ["text:p"]) for g in ("verbatim", "image_dup", "caption_dup")}
    setup = SimpleNamespace(names=lambda role: list(sets), notes=[], seed=3)
    cfg = DetectionConfig(positive_groups="verbatim, caption_dup")
    assert _choose_positives(cfg, setup, {}) == ["verbatim", "caption_dup"]
    measured = DetectionConfig()
    rep = {"verbatim": np.array([1.0, 1.0]), "image_dup": np.array([0.4, 0.4]), "caption_dup": np.array([0.5, 0.5])}
    assert _choose_positives(measured, setup, rep) == ["verbatim", "caption_dup"]
    assert any("seed 3, image_dup: replication 40%" in n and "NOT memorized" in n for n in setup.notes)
    with pytest.raises(RuntimeError, match="no planted group"):
        _choose_positives(measured, setup, {g: np.zeros(2) for g in sets})
