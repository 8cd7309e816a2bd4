"""The README's time table comes from the wall times `make reproduce` records beside each notebook's figures."""
import json

from memlib.harness.reproduce import record_wall_time
from memlib.harness.report import timings_table


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
