"""memlib.harness.report: the README's and docs' generated blocks (results, notebooks, time tables) come from
metrics and timings files, never typed in."""
import json

import pytest

from memlib.harness.report import fill_blocks, notebooks_table, results_table, timings_table
from memlib.harness.reproduce import record_wall_time


def _metrics(tmp_path, stem, metrics):
    (tmp_path / "figures" / stem).mkdir(parents=True)
    (tmp_path / "figures" / stem / "metrics.json").write_text(json.dumps(
        {"metrics": metrics, "provenance": {"git_commit": "abcdef1234567"}}))


def test_results_table_reads_the_metrics_files(tmp_path, monkeypatch):
    _metrics(tmp_path, "00_testbed", {"verbatim_replication_rate": 0.8125})
    table = results_table(tmp_path / "figures")
    assert "| 0.812 | >= 0.80 | abcdef1234 |" in table
    assert "01_detection" in table and "not yet run" in table
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- results:begin -->\nstale\n<!-- results:end -->\nrest\n")
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    assert fill_blocks(page) is True
    text = page.read_text()
    assert "stale" not in text and "0.812" in text and text.endswith("rest\n")
    assert fill_blocks(page) is False
    page.write_text("intro\n<!-- results:begin -->\nno end marker\n")
    with pytest.raises(ValueError, match="markers"):
        fill_blocks(page)


def test_notebooks_table_has_one_row_per_notebook_with_its_headline(tmp_path):
    from memlib.harness.notebooks import NOTEBOOKS

    _metrics(tmp_path, "03_mitigation", {"copy_rate_none": 0.8625, "pe_copy_rate": 0.275,
                                          "pe_copy_rate_ci95": [0.163, 0.388], "replication_rate_none": 0.5})
    rows = notebooks_table(tmp_path / "figures").splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [nb.stem for nb in NOTEBOOKS]
    row = next(r for r in rows if "03_mitigation" in r)
    assert "0.863 → **0.275 [0.163, 0.388]**" in row and "privacy_utility.png" in row
    assert sum("not yet run" in r for r in rows) == len(NOTEBOOKS) - 1


def test_cli_times_table_reads_the_benchmark_file(tmp_path):
    from memlib.harness.report import cli_times_table

    assert "not yet measured" in cli_times_table(tmp_path / "missing.json")
    run = {"command": "generate --method amg", "argv": ["memlib", "generate"], "seconds": 48.04, "returncode": 0,
           "images": 16, "acted": 8, "model_evals_per_image": 150.0, "plain_cfg_evals_per_image": 100,
           "seconds_per_image": 2.06}
    failed = {"command": "doctor", "argv": ["memlib", "doctor"], "seconds": 3.4, "returncode": 1}
    (tmp_path / "t.json").write_text(json.dumps({"machine": {"cores": 2, "cpu": "X", "device": "cpu"},
                                                 "runs": [run, failed]}))
    table = cli_times_table(tmp_path / "t.json")
    assert "| 48.0 | 150 model evaluations per image (plain CFG 100)" in table and "acted on 8 of 16" in table
    assert "3.4 (exit 1)" in table and "2 cores, X" in table


def test_wall_time_is_recorded_beside_the_notebooks_own_timings_and_tabled(tmp_path):
    (tmp_path / "01_x").mkdir()
    (tmp_path / "01_x" / "timings.json").write_text(json.dumps({"sweep_s": 3.0}))
    record_wall_time(tmp_path / "01_x", 90.04)
    record_wall_time(tmp_path / "02_y", 30.0)          # a notebook that writes no timings of its own
    (tmp_path / "03_z").mkdir()
    (tmp_path / "03_z" / "timings.json").write_text("{}")
    t = json.loads((tmp_path / "01_x" / "timings.json").read_text())
    assert t["sweep_s"] == 3.0 and t["notebook_wall_s"] == 90.0 and t["notebook_cores"] >= 1
    table = timings_table(tmp_path)
    assert "| 01_x | 1.5 |" in table and "| 02_y | 0.5 |" in table
    assert "03_z | not recorded" in table and "**2.0**" in table


def test_the_notebooks_table_lists_every_notebook_with_its_figure_and_headline_module():
    import importlib

    from memlib.harness.notebooks import NOTEBOOKS
    from memlib.paths import repo_root

    root = repo_root()
    assert [nb.stem for nb in NOTEBOOKS] == sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for nb in NOTEBOOKS:
        assert (root / "figures" / nb.stem / nb.figure).exists(), nb
        rows = {key for key, _, _ in importlib.import_module(nb.package).HEADLINES}
        assert nb.headline in rows, (nb.stem, nb.headline)


@pytest.mark.parametrize("body", ["{not json", "[]", '{"provenance": {}}'])
def test_a_damaged_metrics_file_is_named_in_one_line(tmp_path, body, capsys, monkeypatch):
    from memlib.harness import report

    (tmp_path / "04_amg").mkdir()
    (tmp_path / "04_amg" / "metrics.json").write_text(body)
    with pytest.raises(report.DamagedFile, match="04_amg/metrics.json.*git checkout"):
        report.results_table(tmp_path)


def test_a_metrics_file_without_provenance_still_renders(tmp_path):
    from memlib.harness import report

    (tmp_path / "04_amg").mkdir()
    (tmp_path / "04_amg" / "metrics.json").write_text('{"metrics": {}}')
    assert "| unknown |" in report.results_table(tmp_path)
