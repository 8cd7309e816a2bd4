"""benchmarks/compare_device.py: another device's metrics against the CPU reference, key by key, with stated
tolerances; it passes when they agree and fails (exit 1) on any disagreement. The GPU check runs the quick
notebooks on CUDA and on the CPU and reconciles them."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from memlib.paths import repo_root

_spec = importlib.util.spec_from_file_location("compare_device", repo_root() / "benchmarks" / "compare_device.py")
compare_device = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_device)

CPU_METRICS = {"auc": 0.90, "auc_ci95": [0.85, 0.95], "n_prompts": 24, "ok": True, "label": "x", "fid": 10.0,
               "replication_memorized": 0.5, "replication_ci_memorized": [0.3, 0.7],
               "paired": {"estimate": -0.2, "ci95": [-0.4, -0.1], "n_units": 8},
               "curve": [0.1, 0.2], "frechet": 0.1, "frechet_ci95": [0.2, 0.4],
               "nothing": None}


def _write(folder: Path, nb: str, metrics: dict, device: str) -> Path:
    (folder / nb).mkdir(parents=True, exist_ok=True)
    (folder / nb / "metrics.json").write_text(json.dumps({"metrics": metrics, "provenance": {"device": device}}))
    return folder


def _run(tmp_path, other: dict, *extra):
    ref, run = _write(tmp_path / "cpu", "01_x", CPU_METRICS, "cpu"), _write(tmp_path / "gpu", "01_x", other, "cuda")
    out = tmp_path / "result.json"
    code = compare_device.main([str(run), "--reference", str(ref), "--out", str(out), *extra])
    return code, json.loads(out.read_text())


def test_agreeing_metrics_pass_and_the_provenance_is_skipped(tmp_path, capsys):
    other = dict(CPU_METRICS, auc=0.86, fid=10.3, replication_memorized=0.35, frechet=0.104,
                 paired=dict(CPU_METRICS["paired"], estimate=-0.3))
    code, body = _run(tmp_path, other)
    assert code == 0 and body["disagreements"] == 0
    rules = {r["key"]: r["rule"] for r in body["notebooks"]["01_x"]}
    assert rules["auc"] == rules["replication_memorized"] == rules["paired.estimate"] == "interval"
    assert rules["n_prompts"] == rules["ok"] == rules["label"] == "exact"
    assert rules["fid"] == "float" and rules["frechet"] == "float"   # an interval that misses its own estimate
    assert not any(r["key"].startswith("provenance") for r in body["notebooks"]["01_x"])
    assert "all agree" in capsys.readouterr().out


@pytest.mark.parametrize("change,key", [({"auc": 0.80}, "auc"),                       # outside the CPU interval
                                        ({"n_prompts": 23}, "n_prompts"),               # counts are exact
                                        ({"ok": False}, "ok"), ({"label": "y"}, "label"),
                                        ({"fid": 11.0}, "fid"),                         # beyond the float tolerance
                                        ({"paired": {"estimate": 0.0, "ci95": [-0.4, -0.1], "n_units": 8}},
                                         "paired.estimate"),
                                        ({"curve": [0.1]}, "curve"),                    # another length
                                        ({"auc_ci95": None}, "auc_ci95")])
def test_each_kind_of_disagreement_fails(tmp_path, change, key, capsys):
    code, body = _run(tmp_path, dict(CPU_METRICS, **change))
    bad = [r["key"] for r in body["notebooks"]["01_x"] if not r["agrees"]]
    assert code == 1 and bad == [key]
    assert "DISAGREES" in capsys.readouterr().out


def test_a_key_missing_on_either_side_fails(tmp_path):
    other = {k: v for k, v in CPU_METRICS.items() if k != "fid"}
    other["extra"] = 1
    code, body = _run(tmp_path, other)
    assert code == 1 and sorted(r["key"] for r in body["notebooks"]["01_x"] if not r["agrees"]) == ["extra", "fid"]


def test_tolerances_are_stated_on_the_command_line(tmp_path):
    assert _run(tmp_path, dict(CPU_METRICS, fid=11.0), "--rtol", "0.2")[0] == 0


def test_the_committed_figures_agree_with_themselves(tmp_path):
    out = tmp_path / "self.json"
    assert compare_device.main([str(repo_root() / "figures"), "--reference", str(repo_root() / "figures"),
                                "--out", str(out)]) == 0


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_notebooks_on_cuda_reconcile_with_the_cpu(tmp_path):
    """Every quick notebook on the CPU, then on CUDA with the same checkpoints (trained once, by the CPU run), each
    with its own figures and cache; the CUDA metrics must reconcile with the CPU ones."""
    from memlib.harness.notebooks import QUICK_PARAMS
    from memlib.harness.reproduce import notebooks, run_notebook

    env = {"TQDM_DISABLE": "1", "MEMLIB_QUICK": "1", "MEMLIB_CHECKPOINTS": str(tmp_path / "checkpoints")}
    for device in ("cpu", "cuda"):
        figures = tmp_path / device / "figures"
        for nb in notebooks(repo_root()):
            run_notebook(nb, tmp_path / device / "executed" / nb.name, dict(QUICK_PARAMS[nb.stem], device=device),
                         figures, dict(env, MEMLIB_CACHE=str(tmp_path / device / "cache")))
    for nb in notebooks(repo_root()):
        prov = json.loads((tmp_path / "cuda" / "figures" / nb.stem / "metrics.json").read_text())["provenance"]
        assert prov["compute_device"].startswith("cuda"), nb.stem
    code = compare_device.main([str(tmp_path / "cuda" / "figures"), "--reference", str(tmp_path / "cpu" / "figures"),
                                "--out", str(tmp_path / "compare.json")])
    assert code == 0, json.loads((tmp_path / "compare.json").read_text())["disagreements"]
