"""Every notebook executed headlessly with tiny parameters (the same ones `make reproduce QUICK=1` uses)."""
import json
import math

import pytest

from memlib.harness.reproduce import QUICK_PARAMS, notebooks, run_notebook
from memlib.paths import repo_root

NOTEBOOKS = {nb.stem: nb for nb in notebooks(repo_root())}


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return tmp_path_factory.mktemp("nb-figures")


def _run(stem, figures, tmp_path, **override):
    params = dict(QUICK_PARAMS[stem], **override)
    out = tmp_path / f"{stem}.ipynb"
    run_notebook(NOTEBOOKS[stem], out, params, figures, env={"TQDM_DISABLE": "1"})
    return json.loads((figures / stem / "metrics.json").read_text())


def test_every_notebook_has_quick_parameters_and_a_parameters_cell():
    assert set(NOTEBOOKS) == set(QUICK_PARAMS)
    for nb in NOTEBOOKS.values():
        cells = json.loads(nb.read_text())["cells"]
        assert any("parameters" in c["metadata"].get("tags", []) for c in cells), nb
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb} has outputs"


def test_papermill_parses_every_parameter_line():
    import nbformat
    from papermill.translators import PythonTranslator

    for nb in NOTEBOOKS.values():
        cell = next(c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        assigned = [ln.split("=")[0].strip() for ln in cell.source.splitlines() if ln and not ln.startswith("#")]
        parsed = [p.name for p in PythonTranslator.inspect(cell)]
        assert parsed == assigned, f"{nb.name}: papermill cannot read {sorted(set(assigned) - set(parsed))}"


def test_00_testbed_runs_and_reruns_byte_identically(figures, tmp_path):
    body = _run("00_testbed", figures, tmp_path)
    m = body["metrics"]
    for key in ("verbatim_replication_rate", "heldout_replication_rate", "heldout_clip_score",
                "memorized_clip_score", "criterion"):
        assert key in m
    prov = body["provenance"]
    assert prov["parameters"]["data_preset"] == "tiny" and prov["checkpoints"]["testbed"]
    first = (figures / "00_testbed" / "metrics.json").read_bytes()
    _run("00_testbed", figures, tmp_path)
    assert (figures / "00_testbed" / "metrics.json").read_bytes() == first


def test_01_detection_runs_on_the_testbed(figures, tmp_path):
    m = _run("01_detection", figures, tmp_path)["metrics"]
    for key in ("auc_first_step_1gen", "tpr1fpr_first_step_1gen", "auc_all_steps_4gen", "baseline_auc"):
        assert 0.0 <= m[key] <= 1.0
    assert (figures / "01_detection" / "roc.png").exists()
    timings = json.loads((figures / "01_detection" / "timings.json").read_text())
    assert timings["first_1gen_prompts_per_second"] > 0


def test_01_detection_runs_on_tiny_stable_diffusion(figures, tmp_path):
    m = _run("01_detection", figures, tmp_path, backend="tiny-sd", max_prompts=3, num_steps=10)["metrics"]
    assert m["n_prompts"] == {"memorized": 3, "non_memorized": 3}


def test_02_explain_runs(figures, tmp_path):
    m = _run("02_explain", figures, tmp_path)["metrics"]
    assert 0.0 <= m["verbatim_trigger_top2_rate"] <= 1.0
    assert 0.0 < m["verbatim_trigger_top2_chance"] <= 1.0
    assert 0.0 <= m["verbatim_trigger_top2_rate_occlusion"] <= 1.0
    assert 0.0 <= m["verbatim_trigger_top2_rate_integrated"] <= 1.0
    assert 0.0 < m["verbatim_path_alpha90_mean"] <= 1.0
    assert (figures / "02_explain" / "attribution_methods.png").exists()
    assert 0.0 <= m["verbatim_trigger_top2_rate_input_embedding"] <= 1.0
    assert math.isfinite(m["verbatim_integrated_padding_share"])   # signed attributions: not bounded by 1
    for route in ("full", "padding_rows_from_empty", "prompt_rows_from_empty"):
        assert 0.0 <= m[f"verbatim_route_{route}_replication"] <= 1.0
        assert m[f"verbatim_route_{route}_first_step_magnitude"] >= 0.0
    assert (figures / "02_explain" / "padding_route.png").exists()
    assert set(m["verbatim_trigger_top2_rate_by_steps"]) == {"first1", "all"}   # quick run: 3 steps
    assert "edit_replication_after" in m
    n = m["drop_control_n_variants"]  # every token of every verbatim prompt dropped once
    assert n["trigger_piece"] > 0 and n["other_token"] > n["trigger_piece"]
    for key in ("drop_control_replication_trigger_piece", "drop_control_replication_other_token",
                "drop_control_trigger_more_necessary_share"):
        assert 0.0 <= m[key] <= 1.0
    assert set(m["drop_control_replication_by_kind"]) <= {"trigger_piece", "content_word", "function_word"}
    assert "trigger_piece" in m["drop_control_replication_by_kind"]
    assert (figures / "02_explain" / "drop_control.png").exists()
    rows = (figures / "02_explain" / "drop_control.csv").read_text().splitlines()
    assert rows[0] == "prompt,token,kind,dropped,replication" and len(rows) == 1 + sum(n.values())


def test_unknown_parameter_stops_the_notebook_and_keeps_earlier_figures(figures, tmp_path):
    import papermill

    before = (figures / "00_testbed" / "metrics.json").read_bytes()
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter"):
        _run("00_testbed", figures, tmp_path, n_gen=3)
    assert (figures / "00_testbed" / "metrics.json").read_bytes() == before
