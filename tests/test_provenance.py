"""memlib.provenance: another backend's or other parameters' results get their own folder, never the
reference figures; tables are written rounded, never empty."""
import pytest


def test_other_backend_results_never_overwrite_the_reference_figures(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from memlib.provenance import figures_name, write_metrics, write_table
    from memlib.plotting import save_figure

    monkeypatch.setenv("MEMLIB_ROOT", str(tmp_path))
    monkeypatch.delenv("MEMLIB_FIGURES")  # as a user runs a notebook by hand: the repository's figures/
    assert figures_name("01_detection", "testbed") == "01_detection"
    write_metrics(figures_name("01_detection"), {"auc": 0.9}, {})
    reference = tmp_path / "figures" / "01_detection"
    before = {p.name: p.read_bytes() for p in reference.iterdir()}

    name = figures_name("01_detection", "tiny-sd", max_prompts=3)
    assert name.startswith("runs/01_detection-tiny-sd-") and "01_detection/" not in name
    assert figures_name("01_detection", "/models/my-sd/", max_prompts=3).startswith("runs/01_detection-my-sd-")
    assert name != figures_name("01_detection", "tiny-sd", max_prompts=4)
    assert figures_name("01_detection", "testbed", max_gens=4) != "01_detection"  # other data or settings
    write_metrics(name, {"auc": 0.5}, {"backend": "tiny-sd"})
    write_table(name, "rows", [{"a": 1}])
    save_figure(plt.figure(), name, "roc")
    run = tmp_path / "figures" / name
    assert {p.name for p in run.iterdir()} >= {"metrics.json", "rows.csv", "roc.png"}
    assert {p.name: p.read_bytes() for p in reference.iterdir()} == before


def test_write_table_writes_rounded_csv_and_refuses_an_empty_table(tmp_path, monkeypatch):
    import csv

    from memlib.provenance import write_table

    monkeypatch.setenv("MEMLIB_FIGURES", str(tmp_path))
    path = write_table("nb", "rows", [dict(prompt="a, b", replication=1 / 3), dict(prompt="c", replication=1.0)])
    assert list(csv.DictReader(path.open())) == [{"prompt": "a, b", "replication": "0.333333"},
                                                {"prompt": "c", "replication": "1.0"}]
    with pytest.raises(ValueError, match="no rows"):
        write_table("nb", "empty", [])
