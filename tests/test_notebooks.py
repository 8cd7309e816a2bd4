"""Every notebook executed headlessly with tiny parameters (the same ones `make reproduce QUICK=1` uses).

Each check reads its notebook's one quick run of the session (the ``quick_runs`` fixture): under ``make test``
nbval's run of the quick copy (a failing cell fails the run, shown) or, for notebook 02, the harness's two
overlapping runs in test_reproduce_notebooks.py; run alone, the notebook runs here once. ``test_NN_*`` tests run
on the xdist worker that runs notebook NN, after it (tests/conftest.py).
"""
import json
import math

import numpy as np
import pytest

from memlib.harness.reproduce import QUICK_PARAMS, folder_files, notebooks, run_notebook
from memlib.api.methods import sweep
from memlib.paths import repo_root

NOTEBOOKS = {nb.stem: nb for nb in notebooks(repo_root())}


def _run(stem, figures, tmp_path, **override):
    params = dict(QUICK_PARAMS[stem], **override)
    out = tmp_path / f"{stem}.ipynb"
    run_notebook(NOTEBOOKS[stem], out, params, figures, env={"TQDM_DISABLE": "1"})
    return json.loads((figures / stem / "metrics.json").read_text())


def _quick(stem, quick_runs):
    """(metrics, folder) of the notebook's quick run."""
    folder = quick_runs.get(stem).figures
    return json.loads((folder / stem / "metrics.json").read_text()), folder


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


@pytest.mark.slow
def test_00_testbed_runs_and_reruns_byte_identically(quick_runs, tiny_data, tmp_path, monkeypatch):
    body, folder = _quick("00_testbed", quick_runs)
    m, n_gens = body["metrics"], QUICK_PARAMS["00_testbed"]["n_gens"]
    data = tiny_data
    for g in ("verbatim", "heldout", "random", "image_dup", "caption_dup"):
        n = len(data.prompts_in(g))
        assert m[f"{g}_n_prompts"] == n
        copies = m[f"{g}_replication_rate"] * n * n_gens   # a share of n * n_gens generations
        assert abs(copies - round(copies)) < 1e-6, (g, copies)
    assert [k for k in m if k.startswith("knob_")] == ["knob_2x_replication_rate"]  # the tiny preset's knob
    # the copy-detector section: its numbers and figure
    assert 0 < m["copydetect_threshold"] < 1 and 0 <= m["copydetect_auc_verbatim_vs_heldout"] <= 1
    assert set(m["copydetect_robustness"]) == {"n_images", "gaussian_noise", "speckle", "blur", "shift"}
    assert m["copydetect_seed1_checkpoint"] and (folder / "00_testbed" / "copy_detector_robustness.png").exists()
    assert m["heldout_frechet_distance"] > 0 and m["retrieval_chance"] == pytest.approx(1 / 320)
    prov = body["provenance"]
    assert prov["parameters"]["testbed_preset"] == "tiny" and prov["checkpoints"]["testbed"]
    first = (folder / "00_testbed" / "metrics.json").read_bytes()
    monkeypatch.setenv("MEMLIB_CHECKPOINTS", str(tmp_path / "checkpoints"))   # the testbed trained again
    _run("00_testbed", tmp_path / "figures", tmp_path)   # papermill, other folders: the same bytes
    assert (tmp_path / "figures" / "00_testbed" / "metrics.json").read_bytes() == first


@pytest.mark.slow
def test_01_detection_runs_on_the_testbed(quick_runs, tiny_data):
    body, folder = _quick("01_detection", quick_runs)
    m, q = body["metrics"], QUICK_PARAMS["01_detection"]
    data = tiny_data
    cap = q["max_prompts"]
    assert m["n_prompts"]["verbatim"] == min(cap, len(data.prompts_in("verbatim")))
    assert m["n_prompts"]["generic"] == min(cap, q["n_generic"]) and m["n_prompts"]["heldout"] == cap
    assert m["n_testbed_seeds"] == 2 and m["testbed_seeds"] == [0, 1]
    per_seed = [m["per_seed"][s]["vs_heldout"]["auc_first_step_1gen"] for s in ("0", "1")]
    assert m["auc_first_step_1gen"] == pytest.approx(np.mean(per_seed))      # pooled = mean over seeds
    assert m["min_seed_auc_first_step_1gen"] == min(per_seed)
    lo, hi = m["auc_first_step_1gen_ci95"]
    assert 0 <= lo <= hi <= 1 and m["auc_first_step_1gen_seed_range"] == [min(per_seed), max(per_seed)]
    row = next(r for r in m["table"] if (r["seed"], r["half"], r["positives"], r["negatives"], r["steps"], r["gens"])
               == (0, "test", "pooled", "heldout", "first", 1))
    assert row["auc"] == m["per_seed"]["0"]["vs_heldout"]["auc_first_step_1gen"]
    # fewer than 100 negatives: the statistic is named TPR at zero false positives
    assert m["vs_random_tpr_statistic_first_step_1gen"] == "tpr_at_zero_fp"
    assert {r["half"] for r in m["table"]} == {"dev", "test"}
    assert [d["copies"] for d in m["dose_response"]["0"]] == sorted({p.copies for p in data.prompts_in(
        "verbatim_knob", "verbatim")})
    for png in ("roc", "auc_by_source", "dose_response", "table_auc_tpr"):
        assert (folder / "01_detection" / f"{png}.png").exists(), png
    timings = json.loads((folder / "01_detection" / "timings.json").read_text())
    assert timings["first_1gen_prompts_per_second"] > 0
    # notebook 00's headline on every seed: the held-out prompts' replication (any training image) too
    assert {"verbatim", "heldout"} <= set(m["per_seed"]["1"]["replication"])
    # the best single step: chosen on the development half, reported on the test half
    assert 0 <= m["best_single_step"] < m["best_single_step_of"] == q["num_steps"]
    assert m["best_single_step_seed"] == 0 and m["best_single_step_negatives"] == "heldout"
    from memlib.harness.report import paper_block
    block = paper_block("01_detection", folder)
    assert f"AUC {m['auc_first_step_1gen']:.3f}" in block and "Verma" in block
    assert "| 1 |" in block.split("\n\n")[1]   # the per-seed replication table
    from memlib.wen.detection_report import claims
    verdicts = {c.name: c.verdict for c in claims(m)}   # reversals of the paper read "does not hold"
    assert (verdicts["beats_tiled_l2"] == "does not hold") == (m["baseline_auc"] > m["auc_first_step_1gen"])
    assert (verdicts["all_steps_at_least_first_step"] == "does not hold") == \
        (m["auc_all_steps_2gen"] < m["auc_first_step_1gen"])


@pytest.mark.slow
def test_detection_notebook_by_hand_on_tiny_stable_diffusion_leaves_the_reference_figures_alone(tmp_path,
                                                                                                monkeypatch):
    import papermill as pm

    root = tmp_path / "checkout"   # a checkout with reference figures, where a user runs the notebook by hand
    reference = root / "figures" / "01_detection"
    reference.mkdir(parents=True)
    (reference / "metrics.json").write_text('{"metrics": {"auc_first_step_1gen": 0.99}}\n')
    (reference / "roc.png").write_bytes(b"the reference ROC")
    (root / "data").symlink_to(repo_root() / "data")
    before = folder_files(reference)
    monkeypatch.setenv("MEMLIB_ROOT", str(root))
    monkeypatch.delenv("MEMLIB_FIGURES")   # by hand: the README's papermill command, figures/ of the checkout
    params = dict(QUICK_PARAMS["01_detection"], backend="tiny-sd", max_prompts=6, num_steps=10)
    pm.execute_notebook(str(NOTEBOOKS["01_detection"]), str(tmp_path / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(root), progress_bar=False)
    assert folder_files(reference) == before
    runs = list((root / "figures" / "runs").glob("01_detection-tiny-sd-*/metrics.json"))
    assert len(runs) == 1
    m = json.loads(runs[0].read_text())["metrics"]
    assert m["n_prompts"] == {"memorized": 6, "non_memorized": 6} and m["n_testbed_seeds"] == 1


@pytest.mark.slow
def test_02_explain_runs(quick_runs, tiny_data):
    from memlib.tokenizer import ClipBPETokenizer
    from memlib.wen.attribution import trigger_positions
    from memlib.wen.explain_study import top2_chance

    body, folder = _quick("02_explain", quick_runs)
    m = body["metrics"]
    verbatim = tiny_data.prompts_in("verbatim")[: QUICK_PARAMS["02_explain"]["max_prompts"]]
    tok = ClipBPETokenizer(20)
    chance = np.mean([top2_chance(tok.n_tokens(p.text), len(trigger_positions(tok, p.text, p.trigger)))
                      for p in verbatim])
    assert m["verbatim_n_prompts"] == len(verbatim) and m["verbatim_trigger_top2_chance"] == pytest.approx(chance)
    assert m["verbatim_trigger_top2_rate_all_steps"] == m["verbatim_trigger_top2_rate_by_steps"]["all"]
    assert set(m["verbatim_trigger_top2_rate_by_steps"]) == {"first1", "all"}   # quick run: 3 steps
    # the headline (Wen's exact setting) and the dev-chosen window, on the test half, with Wilson intervals
    assert m["attribution_loss"] == "batch_norm" and m["verbatim_chosen_window_dev"] in (1, 3)
    assert m["verbatim_n_dev"] + m["verbatim_n_test"] == len(verbatim)
    for key in ("wen_exact", "window_test", "reference_trajectory"):
        lo, hi = m[f"verbatim_trigger_top2_rate_{key}_ci95"]
        assert 0.0 <= lo <= m[f"verbatim_trigger_top2_rate_{key}"] <= hi <= 1.0
    for key in ("trigger_top2_rate", "trigger_top2_rate_occlusion", "trigger_top2_rate_integrated",
                "trigger_top2_rate_input_embedding"):
        assert m[f"verbatim_{key}"] * len(verbatim) == pytest.approx(round(m[f"verbatim_{key}"] * len(verbatim)))
    assert 0.0 < m["verbatim_path_alpha90_mean"] <= 1.0
    assert math.isfinite(m["verbatim_integrated_padding_share"])   # signed attributions: not bounded by 1
    for route in ("full", "padding_rows_from_empty", "prompt_rows_from_empty"):
        assert m[f"verbatim_route_{route}_first_step_magnitude"] > 0.0
    assert m["verbatim_route_full_replication"] == m["edit_replication_before"]   # the edit reuses the as-is run
    for name in ("attribution_methods", "padding_route", "padding_route_heldout", "drop_control", "edit_top_token"):
        assert (folder / "02_explain" / f"{name}.png").exists(), name
    # padding controls: held-out prompts through each row route, and Wen's hits against misses per prompt
    q = QUICK_PARAMS["02_explain"]
    assert m["heldout_route_full_n_prompts"] == q["control_prompts"]
    assert 0.0 <= m["heldout_route_padding_rows_from_empty_top1_retrieval"] <= 1.0
    assert m["verbatim_padding_link_n_hits"] + m["verbatim_padding_link_n_misses"] == len(verbatim)
    # the headline on every testbed seed, and pooled over their test halves
    assert m["n_testbed_seeds"] == 2 and m["per_seed"]["0"]["verbatim"]["wen_exact"] == \
        m["verbatim_trigger_top2_rate_wen_exact"]
    assert m["verbatim_n_test_pooled"] == sum(m["per_seed"][s]["verbatim"]["n_test"] for s in ("0", "1"))
    per_prompt = (folder / "02_explain" / "padding_route_per_prompt.csv").read_text().splitlines()
    assert len(per_prompt) == 1 + len(verbatim) + m["caption_dup_n_prompts"]
    n = m["drop_control_n_variants"]  # every token of every verbatim prompt dropped once
    assert n["trigger_piece"] + n["other_token"] == sum(tok.n_tokens(p.text) for p in verbatim)
    assert set(m["drop_control_replication_by_kind"]) <= {"trigger_piece", "content_word", "function_word"}
    assert "trigger_piece" in m["drop_control_replication_by_kind"]
    rows = (folder / "02_explain" / "drop_control.csv").read_text().splitlines()
    assert rows[0] == "prompt,token,kind,dropped,replication" and len(rows) == 1 + sum(n.values())


@pytest.mark.slow
def test_03_mitigation_runs(quick_runs, tiny_data):
    from memlib.mitigate.evalset import evaluation_prompts
    from memlib.wen import mitigation_report as report

    body, folder = _quick("03_mitigation", quick_runs)
    m, q = body["metrics"], QUICK_PARAMS["03_mitigation"]
    test = evaluation_prompts(tiny_data, "test", max_per_group=q["max_prompts_per_group"])
    rows = m["rows"]
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r["value"])
    assert by_method["none"] == [0] and len(by_method["wen_pe"]) == q["pe_points"] == len(m["l_targets"])
    for name in ("random_token", "random_number", "word_repeat", "embedding_noise", "lower_guidance"):
        assert len(sweep(name)) >= 5, name                   # every curve of a full run has at least 5 knob values
    for name in q["baselines"].split(","):                   # the quick run traces a subset, each curve whole
        assert by_method[name] == [m.value for m in sweep(name)], name
    assert by_method["random_token"] == [1, 2, 4, 6, 8]
    mem = [p for p in test if p.memorized]
    for r in rows + m["filter_rows"]:   # one entry per method and knob value; rates are shares of N x n_gens
        assert r["n_gens"] == q["n_gens"] and r["seed"] == 0 and r["half"] == "test"
        assert sum(v for k, v in r.items() if k.startswith("n_prompts_")) == len(test)
        for col in ("replication", "copy_rate"):         # the paper's pixel criterion and the independent detector
            hits = r[f"{col}_memorized"] * len(mem) * q["n_gens"]
            assert abs(hits - round(hits)) < 1e-6, col
            assert r[f"{col}_ci_memorized"][0] <= r[f"{col}_memorized"] <= r[f"{col}_ci_memorized"][1], col
        assert 0 <= r["nn_is_planted_memorized"] <= 1 and -1 <= r["clip_phrasings_memorized"] <= 1
    # the content caption alone: memorized prompts only, its nearest-is-planted share the chance level
    ref = m["content_reference"]
    assert sum(v for k, v in ref.items() if k.startswith("n_prompts_")) == len(mem) and "n_prompts_heldout" not in ref
    assert m["nn_planted_chance"] == ref["nn_is_planted_memorized"]
    # every chosen point compared with no mitigation over the same prompts, its interval around its estimate
    assert set(m["chosen_points"]) == {"wen_pe", *q["baselines"].split(",")}
    assert m["chosen_points"]["wen_pe"]["value"] == m["pe_operating_l_target"]
    for name, c in list(m["chosen_points"].items()) + [("wen_filter", {"paired": m["filter_paired"]})]:
        for col in ("copy", "replication", "clip_phrasings"):
            d = c["paired"][col]
            assert d["ci95"][0] <= d["estimate"] <= d["ci95"][1] and d["n_prompts"] == len(mem), (name, col)
    none = rows[0]
    pe = [r for r in rows if r["method"] == "wen_pe"]
    assert all(r["evals_per_image"] > none["evals_per_image"] or r["acted_heldout"] == 0 for r in pe)
    assert m["pe_operating_l_target"] in m["l_targets"] and m["l_targets"] == sorted(m["l_targets"], reverse=True)
    if m["pe_n_untouched"]:
        assert m["pe_untouched_bit_identical_share"] == 1.0
    # the filter: tau chosen on the dev half's memorized prompts, reported on the test half
    assert len(m["filter_rows"]) == len(m["filter_dev_rows"]) == 1 + len(q["filter_percentiles"].split(","))
    assert m["filter_rows"][0]["method"] == "unfiltered" and len(m["probe_auc"]) == 8
    assert m["filter_chosen_tau"] in m["filter_taus"].values()
    assert all(r["half"] == "dev" and "n_prompts_heldout" not in r for r in m["filter_dev_rows"])
    assert len(m["rebound_memorized"]["none"]) == q["num_steps"]
    assert {k: m[k] for k, _, _ in report.HEADLINES} and all(m[k] is not None for k, _, _ in report.HEADLINES
                                                            if k != "pe_untouched_bit_identical_share")
    # wall-clock seconds are in timings.json, not in the metrics (a rerun from cache writes the same metrics)
    assert "second" not in json.dumps(m)
    timings = json.loads((folder / "03_mitigation" / "timings.json").read_text())
    n_rows = (len(rows) + 2 * len(m["filter_rows"]) + len(m["dev_rows"]) + 1
              + sum(len(s["rows"]) + len(s["dev_rows"]) + 1 - (s["rows"].get("pe_own") == s["rows"].get("pe_transfer"))
                    for s in m["seeds"].values()))
    assert len(timings["rows"]) == n_rows and all(r["seconds_per_image"] > 0 for r in timings["rows"])
    for s, sm in m["seeds"].items():              # seed 0's choices carried over, and the seed's own
        assert sm["pe_transfer_l_target"] == m["pe_operating_l_target"] and sm["pe_operating_l_target"] in sm["l_targets"]
        assert set(sm["rows"]) == {"none", "pe_transfer", "pe_own", *q["baselines"].split(",")}
        assert set(sm["paired"]) == set(sm["rows"]) - {"none"}
    for name in ("calibration_dev", "privacy_utility", "magnitude_rebound", "grid_before_after", "filter_probe",
                 "filter_training"):
        assert (folder / "03_mitigation" / f"{name}.png").exists(), name
    table = (folder / "03_mitigation" / "mitigation_table.csv").read_text().splitlines()
    assert len(table) == 1 + len(rows)


@pytest.mark.slow
def test_04_amg_runs(quick_runs, tiny_data):
    from memlib.amg.report_tables import DESCRIPTOR_ROW, OWN, TRANSFER, WEN_PE_ROW
    from memlib.mitigate.evalset import evaluation_prompts

    body, folder = _quick("04_amg", quick_runs)
    m, q = body["metrics"], QUICK_PARAMS["04_amg"]
    test = evaluation_prompts(tiny_data, "test", max_per_group=q["max_prompts_per_group"])
    n_mem = len([p for p in test if p.group != "heldout"])
    n_test = n_mem + min(q["heldout_prompts"], sum(p.group == "heldout" for p in test))
    rows = m["rows"]
    for label in ("none", "AMG Main", "AMG Strong", "AMG, released-code gating", "AMG, released-code c1 = 13", "spe",
                  "dup", "sim", "spe+dup", "spe+sim", "dup+sim", "switch always on", "constant threshold",
                  DESCRIPTOR_ROW, WEN_PE_ROW):
        assert label in rows, label                          # Table 1, 4 and 5 rows, the variants beside them

    def share(v, lo=0.0, hi=1.0):
        return isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi   # NaN fails

    def within(v, ci):
        return share(ci[0], -1, 1) and share(ci[1], -1, 1) and ci[0] <= v <= ci[1]

    for label, r in rows.items():
        assert r["n_gens"] == q["n_gens"] and r["half"] == "test"
        assert sum(v for k, v in r.items() if k.startswith("n_prompts_")) == n_test
        # the three privacy columns: (b) copy rate, (a) pixel Gu, (c) nearest-is-planted; and both utilities
        for key in ("copy_rate_memorized", "replication_memorized", "nn_is_planted_memorized",
                    "lowpass_replication_memorized"):
            assert share(r[key]), (label, key)
        assert within(r["replication_memorized"], r["replication_ci_memorized"]), label
        assert within(r["copy_rate_memorized"], r["copy_rate_ci_memorized"]), label
        assert share(r["clip_phrasings_memorized"], -1) and share(r["clip_content_memorized"], -1), label
    assert rows[DESCRIPTOR_ROW]["gamed_columns"] == ["copy_rate"] and "gamed_columns" not in rows["AMG Main"]
    # the headline numbers are finite, in range and the rows' own
    none, main = rows["none"], rows["AMG Main"]
    for key, row, col, lo, hi in (("copy_rate_none", none, "copy_rate_memorized", 0, 1),
                                  ("copy_rate_amg", main, "copy_rate_memorized", 0, 1),
                                  ("lowpass_replication_amg", main, "lowpass_replication_memorized", 0, 1),
                                  ("replication_rate_none", none, "replication_memorized", 0, 1),
                                  ("replication_rate_amg", main, "replication_memorized", 0, 1),
                                  ("clip_score_none", none, "clip_content_memorized", -1, 1),
                                  ("clip_score_amg", main, "clip_content_memorized", -1, 1),
                                  ("clip_phrasings_amg", main, "clip_phrasings_memorized", -1, 1),
                                  ("fd_none", none, "frechet_heldout", 0, math.inf),
                                  ("fd_amg", main, "frechet_heldout", 0, math.inf)):
        assert share(m[key], lo, hi) and m[key] == row[col], key
    ref = m["content_reference"]   # the chance level of nearest-is-planted: content captions of memorized prompts
    assert ref["n_gens"] == q["n_gens"] and sum(v for k, v in ref.items() if k.startswith("n_prompts_")) == n_mem
    assert share(m["nn_is_planted_chance"]) and m["nn_is_planted_chance"] == ref["nn_is_planted_memorized"]
    change = (m["clip_score_amg"] - m["clip_score_none"]) / m["clip_score_none"]
    assert m["clip_content_change_amg"] == pytest.approx(change, rel=1e-3, abs=1e-6)   # metrics keep 6 digits
    assert share(m["switch_fired_heldout"]) and share(m["switch_fired_memorized"])
    assert m["evals_ratio_amg"] == pytest.approx(main["evals_per_image"] / none["evals_per_image"], rel=1e-4)
    assert 1 <= m["evals_ratio_amg"] <= 3 and m["main_c3"] in (10, 100) and m["strong_c3"] >= m["main_c3"]
    # paired changes against no mitigation: the rows' own difference, an interval around it, memorized prompts
    for label, p in m["paired_vs_none"].items():
        assert {"copy", "replication", "lowpass", "nn_planted", "clip_phrasings_relative"} <= set(p), label
        for col, key in (("copy", "copy_rate"), ("replication", "replication"), ("lowpass", "lowpass_replication")):
            d = p[col]
            assert d["n_prompts"] == n_mem and within(d["estimate"], d["ci95"]), (label, col)
            assert d["estimate"] == pytest.approx(rows[label][f"{key}_memorized"] - none[f"{key}_memorized"],
                                                  abs=2e-6), (label, col)
    assert set(m["paired_vs_none"]) == set(rows) - {"none"}
    assert {"copy_verbatim", "copy_image_dup"} <= set(m["paired_vs_main"]["sim"])
    d = m["descriptor_sigma"]   # Main on the copy descriptor's sigma: its own calibration and dev-chosen c3
    assert d["chosen_by"] == "copy" and d["c3"] in (10, 100) and len(d["dev_sweep"]) == 2 and d["detector"]
    assert d["calibration"]["n_trajectories"] == m["calibration"]["n_trajectories"]
    assert set(d["paired_vs_pixel"]) >= {"copy", "replication", "lowpass"}
    # the second testbed: seed 0's c3 transferred and its own dev-chosen one, beside its none and chance level
    s = m["seeds"]["1"]
    assert s["transfer_c3"] == m["main_c3"] and s["own_c3"] in (10, 100) and s["checkpoint"] != m["checkpoint"]
    assert set(s["rows"]) == {"none", TRANSFER, OWN} and share(s["chance_nn_planted"])
    n_seed = {sum(v for k, v in r.items() if k.startswith("n_prompts_")) for r in s["rows"].values()}
    assert len(n_seed) == 1 and all(share(r["copy_rate_memorized"]) for r in s["rows"].values())
    assert set(s["paired_vs_none"]) == {TRANSFER, OWN} and len(s["dev_sweep"]) == 2
    # Table 5's thresholds: the constant fires on the fitted lambda_t's share of the held-out dev trajectories,
    # and with the switch always on G_sim is measured from their lowest sigma_t
    cal = m["calibration"]
    held_dev = len(evaluation_prompts(tiny_data, "dev", groups=("heldout",), max_per_group=q["max_prompts_per_group"]))
    assert cal["n_trajectories"] == held_dev * q["calib_gens"] and cal["percentile"] == 100.0
    assert abs(cal["constant_fire_share"] - cal["fire_share"]) <= 1 / cal["n_trajectories"]
    assert cal["always"]["kind"] == "always" and cal["always"]["a"] == cal["floor"] <= min(cal["curve"])
    assert all(share(v) for v in m["sigma_auc_per_step"])
    assert not m["matched_to_03"]["available"] and "not comparable" in m["matched_to_03"]["reason"]
    assert set(m["dev_sweep"]) == {"code", "constant"} and all(len(v) == 2 for v in m["dev_sweep"].values())
    assert len(m["sigma_auc_per_step"]) == q["num_steps"] == len(m["calibration"]["timesteps"])
    assert rows["none"]["evals_per_image"] == 2 * q["num_steps"]        # plain CFG: 2 evaluations per step
    for name in ("unconditional", "class-conditional"):
        d = m["digits"][name]
        assert set(d["test"]) == {"none", "AMG Main", "AMG Strong"} and d["test"]["none"]["n"] == q["digits_samples"]
        assert d["detector_data_matches"] is True and d["copy_detector"].startswith("copydetect-digits-")
        for r in d["test"].values():
            assert share(r["copy_rate"]) and within(r["copy_rate"], r["copy_rate_ci"])
            assert share(r["lowpass_replication"])
        p = d["paired_vs_none"]["AMG Main"]
        assert p["gu"]["n_prompts"] == q["digits_samples"] and within(p["copy"]["estimate"], p["copy"]["ci95"])
    # wall-clock seconds live in timings.json, never in the metrics (a rerun from cache writes the same bytes)
    assert "seconds" not in json.dumps(m)
    t = json.loads((folder / "04_amg" / "timings.json").read_text())
    assert t["seconds_ratio_amg"] == pytest.approx(t["seconds_per_image_amg"] / t["seconds_per_image_none"], rel=1e-4)
    assert share(t["seconds_ratio_amg"], 0, math.inf) and t["seconds_ratio_amg"] > 0
    assert all(share(r["seconds_per_image"], 0, math.inf) and r["images"] > 0 for r in t["rows"])
    assert len(t["rows"]) > len(rows) and set(t["digits_seconds_per_image"]) == {"unconditional", "class-conditional"}
    for name in ("sigma_calibration", "c3_dev_sweep", "ablations", "per_step_terms", "grid_nearest",
                 "digits_dev_sweep", "digits_grid"):
        assert (folder / "04_amg" / f"{name}.png").exists(), name
    assert len((folder / "04_amg" / "amg_rows.csv").read_text().splitlines()) == 1 + len(rows)


@pytest.mark.slow
def test_05_prss_runs(quick_runs):
    from memlib.harness.report import paper_block
    from memlib.prss import report

    body, folder = _quick("05_prss", quick_runs)
    m, q = body["metrics"], QUICK_PARAMS["05_prss"]
    assert len(m["lambdas"]) == q["lambda_points"]
    assert set(m["operating"]) == {"PR alone", "PRSS", "PRSS, may drop trigger"}
    assert all(v["lambda"] in m["lambdas"] for v in m["operating"].values())
    curves = m["curves"]
    assert set(curves) == {"PE", "PR alone", "SS alone", "PRSS", "SS alone, may drop trigger",
                           "PRSS, may drop trigger"}
    rows = m["rows"]
    for labels in curves.values():
        assert len(labels) == q["lambda_points"] and all(label in rows for label in labels)
    for r in list(rows.values()) + [m["content_caption"]]:
        assert r["n_gens"] == q["n_gens"] and r["half"] == "test"
        for col in ("replication", "copy_rate", "clip_phrasings"):   # each interval holds its estimate (NaN fails)
            lo, hi = r[f"{col}_ci_memorized"]
            assert lo <= r[f"{col}_memorized"] <= hi, (r["method"], col)
    assert "n_prompts_heldout" not in m["content_caption"] and m["nn_chance"] == m["content_caption"][
        "nn_is_planted_memorized"]
    assert rows["none"]["evals_per_image"] == 2 * q["num_steps"]            # plain CFG
    assert rows[curves["PRSS"][0]]["evals_per_image"] > 2 * q["num_steps"]   # candidates' first step at least
    assert len(m["tau"]) == len(m["M"]) == q["num_steps"] and all(a < b for a, b in zip(m["tau"], m["M"]))
    # every comparison is paired, its interval holding its estimate, at levels inside both curves
    assert set(m["comparisons"]) == {"trigger-keeping rewrites", "rewrites that may drop the trigger"}
    pds = [v["paired_late"] for v in m["rebound"].values()]
    for comp in m["comparisons"].values():
        for key in ("matched_privacy", "matched_utility"):
            mc = comp[key]
            assert len(mc["paired"]) == len(mc["levels"]) <= q.get("matched_levels", 4)
            pds += mc["paired"]
        pds += [pd for vs in comp["pr_most_privacy"]["vs"].values() for pd in vs] + [comp["half_drop"]["pe_drop"]]
    for p in m["points"].values():
        pds += [p["vs_none"][k] for k in ("copy_rate", "replication", "nn_is_planted", "clip_phrasings")]
    for pd in pds:
        assert pd["ci95"][0] <= pd["estimate"] <= pd["ci95"][1] and 0 < pd["n_units"] <= pd["n_prompts"], pd
    assert m["prss_copy_rate"] == rows[m["curves"]["PRSS"][m["lambdas"].index(m["prss_lambda"])]]["copy_rate_memorized"]
    assert "seconds" not in json.dumps(m)                                  # wall-clock time lives in timings.json
    timings = json.loads((folder / "05_prss" / "timings.json").read_text())
    n_dev = sum(len(v) for v in m["dev_rows"].values())
    n_seed = sum(len(s["rows"]) + 1 + sum(len(v) for v in s["dev_rows"].values()) for s in m["seeds"].values())
    assert len(timings["rows"]) == len(rows) + 1 + n_dev + n_seed and timings["prss_seconds_ratio"] > 0
    # the further testbed: the main seed's operating points transferred, PRSS's own, none and the reference
    seeds = [s for s in q.get("more_testbed_seeds", "1").split(",") if s]
    assert sorted(m["seeds"]) == sorted(seeds)
    for s in m["seeds"].values():
        assert s["checkpoint"] != m["checkpoint"]
        assert s["transfer"] == {c: v["lambda"] for c, v in m["operating"].items()}
        assert set(s["operating"]) == {"PRSS", "PRSS, may drop trigger"} and all(
            lam in s["lambdas"] for lam in s["operating"].values())
        assert set(s["rows"]) == {"none"} | set(s["points"]) and len(s["points"]) == 5
        assert all(r["n_gens"] == q["n_gens"] for r in s["rows"].values())
    assert all(len(rows) == q["lambda_points"] for rows in m["dev_rows"].values())
    assert set(m["cheap_check"]["per_group"]) == {"verbatim", "image_dup", "caption_dup", "heldout"}
    refs = m["references"]["sources"]["03_mitigation"]   # the committed run used the default testbed
    assert "commit" not in refs and "not comparable" in refs["reason"]
    claims = {c.name: c.verdict for c in report.claims(m)}
    nothing_copies = m["replication_rate_none"] == 0 and m["copy_rate_none"] == 0
    assert claims["keep_rewrites_stay_high"] != "not measured"
    assert (claims["prss_copy_falls"] == "not measured") == nothing_copies
    block = paper_block("05_prss", figures=folder)
    assert "{" not in block.replace("λ ∈ {", "") and f"{m['prss_copy_rate']:.3f} [" in block
    for name in ("candidate_check", "calibration", "privacy_utility", "magnitude_per_step", "search_grid"):
        assert (folder / "05_prss" / f"{name}.png").exists(), name
    assert len((folder / "05_prss" / "prss_rows.csv").read_text().splitlines()) == 1 + len(rows)


@pytest.mark.slow
def test_06_ietagc_runs(quick_runs):
    import shutil

    from memlib.testbed.copy_detector import digits_detector_folder

    shipped = repo_root() / "checkpoints" / digits_detector_folder().name   # as a checkout's run finds it
    if not (quick_runs.checkpoints / shipped.name).exists():
        shutil.copytree(shipped, quick_runs.checkpoints / shipped.name)
    body, folder = _quick("06_ietagc", quick_runs)
    m, q = body["metrics"], QUICK_PARAMS["06_ietagc"]
    runs = set(m["components"])
    assert runs == {"baseline-s0", "iet-s0", "agc-s0", "msr-s0", "full-s0", "long-s0", "bigbatch-s0"}
    visits, n, tau = q["steps"] * q["batch_size"], q["eval_samples"], f"{q['mem_threshold']:.3g}"
    for name, r in m["components"].items():
        assert r["probe_visits"] == visits * (2 if name.startswith("long") else 1), name   # equal sample visits
        counts = list(r["mq_counts"].values())       # IET-AGC's thresholds, ascending: counts never fall
        assert counts == sorted(counts) and counts[-1] <= n, name
        assert r["mem_score"] == pytest.approx(r["mq_counts"][tau] / n), name      # the share under the threshold
        for key in ("mem_score", "copy_rate"):       # (a) and (b), each inside its own interval
            lo, hi = r[f"{key}_ci"]
            assert 0 <= lo <= r[key] <= hi <= 1, (name, key)
        assert r["copy_rate"] * n == round(r["copy_rate"] * n) and 0 <= r["nn_is_planted"] <= 1
        assert r["frechet"] > 0
    assert m["components"]["full-s0"]["taa_visits"] > 0 and m["components"]["msr-s0"]["taa_visits"] == 0
    assert m["mem_threshold"] == q["mem_threshold"]
    # the under-fitting check: every run against real unseen digits, whose own share sits at 0.5
    assert m["underfit_heldout_real"]["farther_than_real_share"] == pytest.approx(0.5, abs=0.05)
    for name, r in m["components"].items():
        lo, hi = r["farther_than_real_share_ci"]
        assert 0 <= lo <= r["farther_than_real_share"] <= hi <= 1 and r["d1_quantiles"] == sorted(r["d1_quantiles"])
    # the real held-out digits' row and the detector's record: quick runs train on 200 digits, not its data
    assert 0 <= m["copy_rate_heldout_real"] <= 1 and 0 <= m["nn_is_planted_heldout_real"] <= 1
    det = m["copy_detector"]
    assert det["checkpoint"] == shipped.name and det["same_data"] is False and det["runs_data"]["max_images"] == 200
    # paired over the same sample seeds: the difference of the runs' own rates
    pair = m["paired"]["full_vs_baseline"]
    assert pair["copy_rate"]["estimate"] == pytest.approx(m["copy_rate_full"] - m["copy_rate_baseline"], abs=1e-6)
    assert pair["mem_score"]["n_units"] == n and set(m["paired"]) >= {"iet_vs_baseline", "iet_vs_bigbatch"}
    assert [len(v) for v in m["rounds"].values()] == [q["rounds"]] * 4
    assert all(p["copy_rate"] is not None for v in m["rounds"].values() for p in v)   # the probes record (b)
    assert len([p for p in m["frontier_points"] if p["run"] == "baseline-s0"]) == q["frontier_points"]
    assert set(m["frontier_test"]) == {"iet-s0", "agc-s0", "msr-s0", "full-s0"}
    for v in m["frontier_test"].values():
        assert v["below"] == (v["probe_mem_score"] < v["frontier_mem_score"])
        assert v["below_copy"] == (v["probe_copy_rate"] < v["frontier_copy_rate"])
    acc = m["acceptance"]
    assert acc["mem_reduction_at_least_0.40"] == (m["mem_reduction"] >= 0.40)      # NaN: not met
    assert acc["fd_change_at_most_0.15"] == (m["fd_change"] <= 0.15)
    assert acc["full_below_frontier"] == (m["below_frontier_share"] == 1.0)
    assert acc["met"] == all(v for k, v in acc.items() if k != "met")
    assert not [k for k in json.dumps(m).split('"') if "seconds" in k or k.endswith("_s")]   # times: timings.json
    for name in ("premise", "components", "frontier", "underfit", "rounds", "loss_threshold", "samples"):
        assert (folder / "06_ietagc" / f"{name}.png").exists(), name
    frontier_csv = (folder / "06_ietagc" / "ietagc_frontier_points.csv").read_text().splitlines()
    assert frontier_csv[0].split(",")[:4] == ["run", "step", "visits", "copy_rate"]
    assert len(frontier_csv) == 1 + len(m["frontier_points"]) + len(m["control_points"])


@pytest.mark.slow
def test_unknown_parameter_stops_the_notebook_and_keeps_earlier_figures(tmp_path):
    import papermill

    earlier = tmp_path / "figures" / "06_ietagc"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"metrics": {"mem_score": 0.5}}')
    before = folder_files(earlier)
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter"):
        _run("06_ietagc", tmp_path / "figures", tmp_path, stepz=3)   # stops at its config cell
    assert folder_files(earlier) == before
