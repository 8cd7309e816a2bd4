"""The README's and docs' generated blocks come from metrics files, never typed in."""
import json

import pytest

from memlib.harness.report import fill_blocks, notebooks_table, results_table


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

    _metrics(tmp_path, "03_mitigation", {"replication_rate_none": 0.8625, "pe_replication_rate": 0.275,
                                          "pe_replication_rate_ci95": [0.163, 0.388]})
    rows = notebooks_table(tmp_path / "figures").splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [nb.stem for nb in NOTEBOOKS]
    row = next(r for r in rows if "03_mitigation" in r)
    assert "0.863 → **0.275 [0.163, 0.388]**" in row and "privacy_utility.png" in row
    assert sum("not yet run" in r for r in rows) == len(NOTEBOOKS) - 1


def test_write_table_writes_rounded_csv_and_refuses_an_empty_table(tmp_path, monkeypatch):
    import csv

    from memlib.provenance import write_table

    monkeypatch.setenv("MEMLIB_FIGURES", str(tmp_path))
    path = write_table("nb", "rows", [dict(prompt="a, b", replication=1 / 3), dict(prompt="c", replication=1.0)])
    assert list(csv.DictReader(path.open())) == [{"prompt": "a, b", "replication": "0.333333"},
                                                {"prompt": "c", "replication": "1.0"}]
    with pytest.raises(ValueError, match="no rows"):
        write_table("nb", "empty", [])


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
