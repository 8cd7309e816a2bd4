"""The ``memlib`` command and ``memlib.detect/explain/generate`` on a user's model.

The demo runs on a copy of the shipped testbed; a tiny random-weight Stable Diffusion saved with
``save_pretrained`` stands in for a user's folder; the registry test runs every method on the tiny testbed.
"""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import memlib
from memlib.api import detection as detect_module
from memlib.api import image_generation
from memlib.api.cli import main
from memlib.api.methods import available

pytestmark = pytest.mark.slow


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    return StableDiffusionBackend.tiny_random(seed=3).save_pretrained(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def shipped_testbed(monkeypatch, tmp_path_factory):
    """The shipped default testbed, copied where the tests keep checkpoints (never written in the checkout)."""
    from memlib.paths import repo_root
    from memlib.testbed.build import TestbedRef, checkpoint_folder

    ref = TestbedRef()
    name = checkpoint_folder(ref.data_config(), ref.model_config(), ref.train_config()).name
    dest = tmp_path_factory.getbasetemp() / "checkpoints" / name
    if not dest.exists():
        shutil.copytree(repo_root() / "checkpoints" / name, dest)


def test_the_demo_prints_a_table_and_writes_csv_and_roc(shipped_testbed, tmp_path, capsys):
    out = tmp_path / "demo" / "scores.csv"
    assert main(["detect", "--model", "testbed", "--demo", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "AUC" in text and "TPR at zero FP" in text and "flagged:" in text
    rows = _rows(out)
    assert len(rows) == 10 and {r["memorized"] for r in rows} == {"0", "1"}
    assert (tmp_path / "demo" / "scores_roc.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "demo" / "scores.summary.json").read_text())
    # planted verbatim prompts against held-out ones, threshold from 200 trained-but-not-memorized captions
    assert summary["auc"] > 0.9 and summary["n_flagged"] >= 4
    assert "calibrated" in summary["threshold_note"]


def test_detect_on_a_saved_tiny_sd_folder_over_the_nemo_prompts(sd_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["detect", "--model", str(sd_folder), "--prompts", "nemo", "--max-prompts", "6", "--num-steps", "4",
                 "--threshold", "0.5", "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert len(rows) == 12 and [r["memorized"] for r in rows] == ["1"] * 6 + ["0"] * 6
    assert all(np.isfinite(float(r["score"])) and r["flagged"] in ("0", "1") for r in rows)
    assert (tmp_path / "scores_roc.png").exists()
    assert "AUC" in capsys.readouterr().out


def test_an_interrupted_detect_resumes_without_recomputing(sd_folder, tmp_path, monkeypatch, capsys):
    prompts = [f"prompt number {i}" for i in range(6)]
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    real, seen = detect_module.generate, []

    def dies_on_the_second_batch(backend, texts, *a, **k):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.extend(texts)
        return real(backend, texts, *a, **k)

    argv = ["detect", "--model", str(sd_folder), "--prompts", str(tmp_path / "p.txt"), "--batch-size", "2",
            "--num-steps", "4", "--out", str(tmp_path / "s.csv"), "--quiet"]
    monkeypatch.setattr(detect_module, "generate", dies_on_the_second_batch)
    assert main(argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert [r["prompt"] for r in _rows(tmp_path / "s.csv")] == prompts[:2]

    def counts(backend, texts, *a, **k):
        seen.extend(texts)
        return real(backend, texts, *a, **k)

    seen.clear()
    monkeypatch.setattr(detect_module, "generate", counts)
    assert main(argv) == 0
    assert seen == prompts[2:]                                   # the finished two were not recomputed
    resumed = [float(r["score"]) for r in _rows(tmp_path / "s.csv")]
    straight = memlib.detect(prompts, str(sd_folder), num_steps=4, progress=False)
    np.testing.assert_allclose(resumed, straight.scores, rtol=1e-4)
    # other settings into the same file are refused, not mixed in
    assert main(argv[:-1] + ["--steps", "2", "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_an_interrupted_generate_resumes(sd_folder, tmp_path, monkeypatch):
    real, calls = image_generation.sample_images, []

    def dies_on_the_second_batch(backend, prompts, *a, **k):
        calls.append(list(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(backend, prompts, *a, **k)

    monkeypatch.setattr(image_generation, "sample_images", dies_on_the_second_batch)
    prompts = ["a red door", "a blue car", "a green tree"]
    with pytest.raises(KeyboardInterrupt):
        memlib.generate(prompts, str(sd_folder), out=tmp_path / "img", num_steps=3, batch_size=1, progress=False)
    calls.clear()
    monkeypatch.setattr(image_generation, "sample_images", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    res = memlib.generate(prompts, str(sd_folder), out=tmp_path / "img", num_steps=3, batch_size=1, progress=False)
    assert calls == [["a blue car"], ["a green tree"]] and res.computed == 2
    assert [r["prompt"] for r in res.records] == prompts and (tmp_path / "img" / "00002-0.png").exists()


def test_generate_on_a_user_folder_writes_an_image_and_its_record(sd_folder, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red door\n")
    assert main(["generate", "--model", str(sd_folder), "--prompts", str(tmp_path / "p.txt"), "--method",
                 "embedding_noise", "--knob", "sigma=0.5", "--gens", "2", "--num-steps", "3", "--out",
                 str(tmp_path / "img"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "img" / "00000-1.json").read_text())
    assert (rec["method"], rec["knob"], rec["value"], rec["acted"], rec["generation"]) == \
        ("embedding_noise", "sigma", 0.5, True, 1)
    assert rec["prompt"] == "a red door" and rec["plain_cfg_evals_per_image"] == 6 and rec["seconds_per_image"] > 0
    assert (tmp_path / "img" / "00000-1.png").exists() and "2 images" in capsys.readouterr().out


def test_every_registry_method_is_reachable_through_generate(tiny_testbed, tmp_path):
    from memlib.backends.testbed import TestbedBackend
    from memlib.testbed.build import TestbedRef

    backend = TestbedBackend(tiny_testbed.model, tiny_testbed)
    backend.ref = TestbedRef(preset="tiny", train_steps=6, batch_size=8, clip_steps=4)
    prompt = tiny_testbed.data.prompts_in("verbatim")[0].text
    for name in available():
        res = memlib.generate([prompt], method=name, out=tmp_path / name, num_steps=3, backend=backend,
                              progress=False)
        rec = res.records[0]
        assert rec["method"] == name and (tmp_path / name / "00000-0.png").exists()
        assert rec["model_evals_per_image"] >= 1 and rec["plain_cfg_evals_per_image"] == 6
    assert len(available()) >= 12


def test_explain_writes_a_table_and_a_bar_chart(sd_folder, tmp_path, capsys):
    assert main(["explain", "--model", str(sd_folder), "--prompt", "a photo of a red door", "--num-steps", "3",
                 "--gens", "2", "--out", str(tmp_path / "ex"), "--quiet"]) == 0
    rows = _rows(tmp_path / "ex" / "tokens.csv")
    assert [r["token"] for r in rows] == ["a", "photo", "of", "a", "red", "door"]
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 7))
    assert (tmp_path / "ex" / "tokens.png").exists() and "significance" in capsys.readouterr().out


def _jsonl(tmp_path, text):
    (tmp_path / "bad.jsonl").write_text(text)
    return str(tmp_path / "bad.jsonl")


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--prompts", "nemo", "--method", "nope"], "unknown method 'nope'"),
    (["generate", "--prompts", "nemo", "--method", "wen_pe", "--knob", "tau=3"], "has the knob 'l_target'"),
    (["generate", "--prompts", "nemo", "--method", "wen_pe", "--knob", "l_target=abc"], "must be a number"),
    (["generate", "--prompts", "nemo", "--method", "random_token", "--knob", "-5"], "outside"),
    (["detect", "--prompts", "BAD"], "line 2: invalid JSON"),
    (["detect", "--prompts", "missing.txt"], "does not exist"),
    (["detect", "--prompts", "nemo", "--steps", "0"], "steps = 0"),
    (["detect", "--prompts", "nemo", "--model", "no-such-org/no-such-model"], "is not available"),
    (["detect", "--prompts", "nemo", "--model", "./no/such/folder"], "is not available"),
    (["detect", "--prompts", "nemo", "--device", "cuda:7"], "device"),
    (["detect", "--prompts", "nemo", "--dtype", "fp16", "--device", "cpu"], "refused"),
    (["detect", "--demo", "--model", "tiny-sd"], "--demo uses the testbed"),
    (["detect", "--model", "digits", "--prompts", "nemo"], "no text encoder"),
    (["detect", "--prompts", "nemo", "--batch-size", "0"], "--batch-size 0"),
    (["generate", "--model", "tiny-sd", "--prompts", "nemo", "--method", "amg"], "testbed only"),
    (["explain", "--model", "tiny-sd", "--prompt", "  "], "non-empty prompt"),
])
def test_bad_input_names_the_problem_and_exits_non_zero(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [_jsonl(tmp_path, '{"caption": "ok"}\n{"caption": \n') if a == "BAD" else a for a in argv]
    assert main(argv + ["--quiet", "--max-prompts", "2"] if argv[0] != "explain" else argv + ["--quiet"]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["detect", "--bogus"], ["detect", "--steps", "abc"],
                                  ["detect", "--threshold", "1", "--calibrate", "x"], ["frobnicate"]])
def test_unknown_or_mistyped_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "error" in capsys.readouterr().err


def test_doctor_reports_offline_status(monkeypatch, capsys):
    from memlib.backends import hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main(["doctor"])
    assert "offline (HF_HUB_OFFLINE=1)" in capsys.readouterr().out
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for reachable, needle in ((False, "cannot be reached"), (True, "reachable: hub ids download")):
        monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0, r=reachable: r)
        main(["doctor"])
        assert needle in capsys.readouterr().out


def test_the_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "memlib", "methods"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "wen_pe" in r.stdout and "testbed only" in r.stdout


def test_overwrite_deletes_only_the_images_memlib_wrote(sd_folder, tmp_path):
    out = tmp_path / "img"
    out.mkdir()
    (out / "2023-holiday.png").write_bytes(b"a user's photo")
    (out / "1-notes.json").write_text('{"mine": true}')
    run = dict(out=out, num_steps=3, batch_size=1, progress=False)
    memlib.generate(["a red door"], str(sd_folder), **run)
    memlib.generate(["a blue car"], str(sd_folder), overwrite=True, **run)
    assert (out / "2023-holiday.png").read_bytes() == b"a user's photo" and (out / "1-notes.json").exists()
    assert json.loads((out / "00000-0.json").read_text())["prompt"] == "a blue car"


def test_a_folder_memlib_did_not_make_is_not_written_over(sd_folder, tmp_path):
    out = tmp_path / "img"
    out.mkdir()
    (out / "00000-0.png").write_bytes(b"a user's image")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not made by memlib"):
            memlib.generate(["a red door"], str(sd_folder), out=out, num_steps=3, overwrite=overwrite, progress=False)
    assert (out / "00000-0.png").read_bytes() == b"a user's image" and not (out / "run.json").exists()


@pytest.mark.parametrize("body", ["[]", "not json", '"text"'])
def test_a_damaged_run_json_is_named(sd_folder, tmp_path, body):
    out = tmp_path / "img"
    out.mkdir()
    (out / "run.json").write_text(body)
    with pytest.raises(ValueError, match="run.json"):
        memlib.generate(["a red door"], str(sd_folder), out=out, num_steps=3, progress=False)


def test_calibration_leaves_out_rows_labelled_memorized_and_obeys_the_cap(tmp_path):
    f = tmp_path / "cal.jsonl"
    f.write_text("".join(json.dumps({"caption": f"prompt {i}", "memorized": int(i % 3 == 0)}) + "\n"
                         for i in range(9)))
    kept, dropped = detect_module.calibration_records(str(f), 0)
    assert dropped == 3 and [r.text for r in kept] == [f"prompt {i}" for i in (1, 2, 4, 5, 7, 8)]
    assert [r.text for r in detect_module.calibration_records(str(f), 2)[0]] == ["prompt 1", "prompt 2"]
    with pytest.raises(ValueError, match="labelled memorized.*non_memorized"):
        detect_module.calibration_records("nemo:memorized", 0)


def test_a_second_writer_of_one_results_file_is_refused(tmp_path):
    from memlib.api.store import ResumeError, RowStore

    first = RowStore(tmp_path / "scores.csv", {"model": "m"}, ["prompt", "score"], "prompt")
    with pytest.raises(ResumeError, match="another memlib run is writing"):
        RowStore(tmp_path / "scores.csv", {"model": "m"}, ["prompt", "score"], "prompt")
    first.add([{"prompt": "a", "score": 1.0}])


def test_a_damaged_score_in_a_resumed_csv_is_scored_again(sd_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    memlib.detect(["a red door", "a blue car"], str(sd_folder), out=out, num_steps=3, progress=False)
    out.write_text(out.read_text().replace(out.read_text().splitlines()[1].split(",")[5], "oops", 1))
    with pytest.warns(UserWarning, match="no numeric score"):
        res = memlib.detect(["a red door", "a blue car", "a red door"], str(sd_folder), out=out, num_steps=3,
                            progress=False)
    assert (res.computed, res.read_back) == (1, 1) and np.isfinite(res.scores).all()


def test_a_jsonl_file_may_mix_caption_and_prompt_fields(tmp_path):
    from memlib.prompt_files import read_many

    f = tmp_path / "p.jsonl"
    f.write_text('{"caption": "a red door"}\n{"prompt": "a blue car"}\n')
    assert [r.text for r in read_many(str(f), 0)] == ["a red door", "a blue car"]
    f.write_text('{"caption": "a red\\u0001 door"}\n{"caption": "tab\there"}\n')
    from memlib.prompts import PromptFileError
    with pytest.raises(PromptFileError) as e:
        read_many(str(f), 0)
    assert " at at " not in str(e.value) and "control character at column" in str(e.value)


def test_explain_checks_its_folder_before_loading_a_model(tmp_path, monkeypatch):
    from memlib.api import explanation

    monkeypatch.setattr(explanation, "open_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "taken").write_text("a user's file")
    with pytest.raises(ValueError, match="is a file"):
        memlib.explain("a red door", out=tmp_path / "taken")


def test_tokens_are_shown_as_text_not_byte_level_bpe():
    from memlib.tokenizer import ClipBPETokenizer

    assert ClipBPETokenizer().token_strings("a door\u200b café") == ["a", "door", "\u200b", "café"]
