"""Every notebook's config refuses hostile parameter values at the config cell, with a named error, before any
model loads: negatives, zero where a count is needed, 1e308, infinities, NaN, booleans for numbers, and lists
that are empty, repeated or out of order where order or distinctness matters."""
import dataclasses
import math
import typing

import pytest

from memlib.amg.study import AMGStudyConfig
from memlib.config import ConfigError
from memlib.ietagc.study import IETAGCStudyConfig
from memlib.prss.study import PRSSStudyConfig
from memlib.testbed.evaluate import TestbedNotebookConfig
from memlib.wen.detection_study import DetectionConfig
from memlib.wen.explain_study import ExplainConfig
from memlib.wen.mitigation_study import MitigationConfig

CONFIGS = [TestbedNotebookConfig, DetectionConfig, ExplainConfig, MitigationConfig, AMGStudyConfig,
           PRSSStudyConfig, IETAGCStudyConfig]
HOSTILE_NUMBERS = [-1, 1e308, -1e308, math.inf, -math.inf, math.nan, True]
# numeric fields where a negative value means something (none today); list them here with the reason if added
NEGATIVE_ALLOWED: dict[tuple[str, str], str] = {}
# comma-list fields and the hostile lists each must refuse
HOSTILE_LISTS = {
    ("DetectionConfig", "more_testbed_seeds"): ["1,1", "-1", "x"],
    ("ExplainConfig", "more_testbed_seeds"): ["1,1", "-1", "x"],
    ("MitigationConfig", "filter_percentiles"): ["-5", "100", "x"],
    ("AMGStudyConfig", "c3_sweep"): ["", "300", "1000,100,10", "100,100", "1e308,1e309", "x"],
    ("AMGStudyConfig", "digits_c3_sweep"): ["", "30", "300,30", "30,30", "x"],
    ("IETAGCStudyConfig", "seeds"): ["", "1,1", "-1", "x"],
    ("IETAGCStudyConfig", "block_out_channels"): ["", "0,32", "-8", "x"],
}


def _check(cls, **values):
    cfg = cls(**values)
    cfg.validate()


def _numeric_fields():
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float) and f.name != "seed" and not f.name.endswith("_seed"):
                yield cls, f.name


@pytest.mark.parametrize("cls,name", list(_numeric_fields()), ids=lambda x: getattr(x, "__name__", x))
def test_every_numeric_parameter_refuses_hostile_values(cls, name):
    accepted = []
    for v in HOSTILE_NUMBERS:
        if v == -1 and (cls.__name__, name) in NEGATIVE_ALLOWED:
            continue
        try:
            _check(cls, **{name: v})
        except (ConfigError, ValueError, TypeError):
            continue
        accepted.append(v)
    assert not accepted, f"{cls.__name__}.{name} accepts {accepted}"


@pytest.mark.parametrize("where,values", list(HOSTILE_LISTS.items()), ids=lambda x: ".".join(x) if isinstance(x, tuple) else "")
def test_list_parameters_refuse_empty_repeated_or_unordered_lists(where, values):
    cls = next(c for c in CONFIGS if c.__name__ == where[0])
    for v in values:
        with pytest.raises((ConfigError, ValueError)):
            _check(cls, **{where[1]: v})


def test_seeds_refuse_negatives_and_booleans():
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if f.name == "seed" or f.name.endswith("_seed"):
                for v in (-1, True, math.inf):
                    with pytest.raises((ConfigError, ValueError, TypeError)):
                        _check(cls, **{f.name: v})


# where the networks run: refused by name, before any model loads (half precision on the CPU, unknown devices)
HOSTILE_COMPUTE = [({"device": "tpu"}, "device"), ({"device": "cuda:x"}, "device"), ({"dtype": "int8"}, "dtype"),
                   ({"device": "cpu", "dtype": "fp16"}, "dtype"), ({"device": "cpu", "dtype": "bf16"}, "dtype"),
                   ({"device": 0}, "device")]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("values,named", HOSTILE_COMPUTE, ids=lambda x: str(x))
def test_device_and_dtype_refuse_hostile_values_naming_the_parameter(cls, values, named, monkeypatch):
    import memlib.testbed.build as build

    def no_loading(*a, **k):
        raise AssertionError("a model loaded before the parameters were checked")

    monkeypatch.setattr(build, "load_or_train", no_loading)
    with pytest.raises(ConfigError, match=f"parameter '{named}'"):
        _check(cls, **values)
