"""Typed claims and page templates: sentences are filled from metrics, never built in code."""
import json

import pytest

from memlib.claims import Claim, render, verdict


def test_verdicts_are_checked_and_derived_from_the_test():
    assert verdict(True) == "holds" and verdict(False) == "does not hold"
    assert verdict(None) == "not distinguishable" and verdict(True, measured=False) == "not measured"
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        Claim("x", "x helps", "maybe")


def test_render_fills_metrics_and_claims_and_names_a_missing_value():
    c = Claim("frontier", "below the frontier", verdict(True), {"margin": 0.02})
    text = render("{mem_reduction:.0%} lower; {claims[frontier].verdict}; {bad:.2f}",
                  {"mem_reduction": 0.967, "claims": {"frontier": c}, "bad": float("nan")})
    assert text == "97% lower; holds; n/a"
    with pytest.raises(KeyError, match="page.md: no value named 'missing'"):
        render("{missing}", {"a": 1}, where="page.md")


def test_a_notebook_with_a_template_fills_its_block_from_its_report_module(tmp_path, monkeypatch):
    import types

    from memlib.harness import notebooks, report

    module = types.ModuleType("fake_report")
    module.HEADLINES = []
    module.values = lambda m: {"table": "| a |\n|---|"}
    module.claims = lambda m: [Claim("lower", "it lowers", verdict(m["after"] < m["before"]))]
    monkeypatch.setitem(__import__("sys").modules, "fake_report", module)
    nb = notebooks.Notebook("09_fake", "fake_report", "q?", "after", "l", "f.png", block="fake")
    monkeypatch.setattr(report, "NOTEBOOKS", (nb,))
    monkeypatch.setitem(notebooks.BY_STEM, "09_fake", nb)
    (tmp_path / "figures" / "09_fake").mkdir(parents=True)
    (tmp_path / "figures" / "09_fake" / "metrics.json").write_text(json.dumps(
        {"metrics": {"before": 0.5, "after": 0.1}, "provenance": {"git_commit": "0" * 12}}))
    (tmp_path / "docs" / "templates").mkdir(parents=True)
    (tmp_path / "docs" / "templates" / "09_fake.md").write_text(
        "{table}\n\n- {before:.2f} → {after:.2f}: the claim {claims[lower].verdict}.\n")
    page = tmp_path / "results.md"
    page.write_text("<!-- fake:begin -->\n<!-- fake:end -->\n")
    monkeypatch.setenv("MEMLIB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path)
    assert report.fill_blocks(page, tmp_path)
    assert "- 0.50 → 0.10: the claim holds." in page.read_text() and "| a |" in page.read_text()
