"""memlib.harness.report: the README's results and time tables are generated from metrics and timings files,
never typed in."""
import json

import pytest

from memlib.harness.report import BEGIN, END, results_table, timings_table, update_readme
from memlib.harness.reproduce import record_wall_time


def test_results_table_reads_the_metrics_files(tmp_path, monkeypatch):
    (tmp_path / "figures" / "00_testbed").mkdir(parents=True)
    (tmp_path / "figures" / "00_testbed" / "metrics.json").write_text(json.dumps(
        {"metrics": {"verbatim_replication_rate": 0.8125}, "provenance": {"git_commit": "abcdef1234567"}}))
    table = results_table(tmp_path / "figures")
    assert "| 0.812 | >= 0.80 | abcdef1234 |" in table
    assert "01_detection" in table and "not yet run" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nstale\n{END}\nrest\n")
    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    assert update_readme(readme) is True
    text = readme.read_text()
    assert "stale" not in text and "0.812" in text and text.endswith("rest\n")
    assert update_readme(readme) is False
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme)


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
