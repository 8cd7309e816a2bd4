"""Notebook 04's paired comparisons (``memlib.amg.privacy.compare``) on hand-built rows: b minus a per column over
the same prompts, intervals that resample planted images, the columns a row lacks left out."""
from types import SimpleNamespace

import numpy as np
import pytest

from memlib.amg.privacy import compare, compare_all

GROUPS = np.array(["verbatim"] * 4 + ["image_dup"] * 4 + ["heldout"] * 4)
UNITS = np.array(["planted-0", "planted-0", "planted-1", "planted-1", "planted-2", "planted-2", "planted-3",
                  "planted-3"] + [f"combination-{i}" for i in range(4)])


def _row(name, **per_prompt):
    base = {c: np.full(12, 0.5) for c in ("copy", "replication", "nn_planted", "clip_content", "clip_phrasings")}
    return SimpleNamespace(method=name, knob="c3", value=1.0, per_prompt=dict(base, **per_prompt), units=UNITS,
                           groups=GROUPS)


def test_a_change_on_every_memorized_prompt_excludes_zero_and_the_rest_does_not():
    none = _row("none", copy=np.ones(12), replication=np.ones(12))
    # AMG: pixel replication falls everywhere, the copy rate only on the verbatim prompts of one planted image
    amg = _row("amg", replication=np.zeros(12), copy=np.array([0, 0] + [1] * 10, float))
    out = compare(none, amg)
    assert out["replication"]["estimate"] == -1.0 and out["replication"]["ci95"] == [-1.0, -1.0]
    assert out["replication"]["n_prompts"] == 8 and out["replication"]["n_units"] == 4   # memorized only
    copy = out["copy"]
    assert copy["estimate"] == pytest.approx(-0.25) and copy["ci95"][0] < 0 and copy["ci95"][1] == 0.0
    assert out["clip_phrasings"]["estimate"] == 0.0 and out["clip_phrasings_relative"]["relative"]
    assert out["clip_phrasings_heldout"]["n_prompts"] == 4
    assert "lowpass" not in out and "copy_verbatim" not in out   # a column one row lacks; groups on request


def test_groups_the_low_pass_column_and_rows_without_a_detector():
    a = _row("a", lowpass=np.ones(12))
    b = _row("b", lowpass=np.zeros(12), copy=np.full(12, np.nan))   # scored without a copy detector
    out = compare(a, b, by_group=True)
    assert out["lowpass"]["estimate"] == -1.0
    assert "copy" not in out and "copy_verbatim" not in out
    assert out["replication_verbatim"]["n_prompts"] == 4 and out["replication_image_dup"]["n_units"] == 2


def test_every_row_against_the_base_but_the_base_itself():
    none, amg = _row("none"), _row("amg")
    assert set(compare_all(none, {"none": none, "AMG Main": amg})) == {"AMG Main"}


def test_rows_on_other_prompts_are_not_compared():
    other = _row("other")
    other.units = UNITS[::-1].copy()
    with pytest.raises(ValueError, match="different prompts"):
        compare(_row("none"), other)
