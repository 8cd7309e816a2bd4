"""memlib.prompts: Wen's jsonl format, the vendored NeMo lists, bad paths, and files read before any model."""
import json

import pytest

from memlib.prompts import NEMO_LABELS, PromptFileError, load_nemo_prompts, load_prompt_jsonl


def write(tmp_path, text, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file(tmp_path):
    rows = [{"caption": "The No Limits Business Woman Podcast", "index": 1030727993, "url": "https://x/1.jpg"},
            {"caption": 'Café "quoted" 小红花'}]
    path = write(tmp_path, json.dumps(rows[0]) + "\n\n  \n" + json.dumps(rows[1], ensure_ascii=False) + "\n")
    assert load_prompt_jsonl(path) == [r["caption"] for r in rows]
    assert load_prompt_jsonl(path, records=True) == rows
    assert load_prompt_jsonl(write(tmp_path, '{"text": "a dog"}\n', "t.jsonl"), field="text") == ["a dog"]


@pytest.mark.parametrize("lines, message", [
    (['{"caption": "ok"}', '{"caption": "ok"}', '{"caption": "broken"'], "line 3: invalid JSON"),
    (['{"caption": "ok"}', '{"url": "https://x"}'], "line 2: no 'caption' field"),
    (['{"caption": 42}'], "line 1: 'caption' is a JSON int, expected a string"),
    (['{"caption": "   "}'], "line 1: 'caption' is empty"),
    (['["a list"]'], "line 1: expected a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, lines, message):
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(PromptFileError, match=message) as err:
        load_prompt_jsonl(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(PromptFileError, match="no prompts in"):
        load_prompt_jsonl(write(tmp_path, text))


def test_nemo_memorized():
    recs = load_nemo_prompts("memorized")
    assert len(recs) == 500
    labels = [r["label"] for r in recs]
    assert set(labels) == set(NEMO_LABELS) and labels.count("VM") == 112 and labels.count("TM") == 388
    assert recs[0] == {"prompt": "The No Limits Business Woman Podcast", "index": 1030727993, "label": "VM",
                       "url": "https://onlinecoach1.hipcast.com/albumart/1000_1618923228.jpg", "row": 0,
                       "mean_sscd": pytest.approx(0.8392826318740845), "max_sscd": pytest.approx(0.8467365503311157)}
    assert sum(r["max_sscd"] is None for r in recs) == 13  # empty cells in the source
    assert all(r["max_sscd"] >= 0.7 for r in recs if r["label"] == "VM")
    assert all(isinstance(r["prompt"], str) and r["prompt"].strip() for r in recs)


def test_nemo_non_memorized(tmp_path):
    recs = load_nemo_prompts("non_memorized")
    assert len(recs) == 500 and len({r["prompt"] for r in recs}) == 500
    assert set(recs[0]) == {"prompt", "index", "url", "row"}
    with pytest.raises(ValueError, match="non_memorized"):
        load_nemo_prompts("lexica")
    with pytest.raises(FileNotFoundError, match="data/nemo"):
        load_nemo_prompts("memorized", folder=tmp_path)


@pytest.mark.parametrize("spec", ["", "   ", "FOLDER", "FOLDER/missing.jsonl"])
def test_bad_prompt_file_path_names_it(spec, tmp_path):
    from memlib.prompts import load_prompt_file

    spec = spec.replace("FOLDER", str(tmp_path))
    with pytest.raises(PromptFileError, match="prompt file") as err:
        load_prompt_file(spec)
    assert (spec.strip() and spec in str(err.value)) or "name is empty" in str(err.value)


def test_missing_prompt_file_fails_before_the_model_is_built(monkeypatch, tmp_path):
    from memlib.wen.detection_study import DetectionConfig, setup_detection

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the prompt files were read")

    monkeypatch.setattr("memlib.backends.make_backend", no_model)
    cfg = DetectionConfig(backend="tiny-sd", positives_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(PromptFileError, match="missing.jsonl"):
        setup_detection(cfg)
