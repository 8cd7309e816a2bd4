"""Prompt files for the command line: Wen's jsonl, csv (NeMo's), plain text, labels, and line-numbered errors."""
import pytest

from memlib.prompt_files import read_many, read_prompts
from memlib.prompts import PromptFileError


def test_jsonl_with_labels_and_plain_text(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text('{"caption": "a cat", "memorized": true}\n\n{"caption": "a dog", "memorized": 0}\n')
    recs = read_prompts(j)
    assert [(r.text, r.memorized) for r in recs] == [("a cat", True), ("a dog", False)]
    assert recs[1].source == "p.jsonl:3"
    t = tmp_path / "p.txt"
    t.write_text("first prompt\n\n  second prompt  \n")
    assert [(r.text, r.memorized) for r in read_prompts(t)] == [("first prompt", None), ("second prompt", None)]
    assert [r.memorized for r in read_prompts(f"{t}@memorized")] == [True, True]


def test_csv_separators_label_columns_and_nemo():
    recs = read_prompts("nemo", max_prompts=3)
    assert [r.memorized for r in recs] == [True] * 3 + [False] * 3
    assert {r.kind for r in recs[:3]} <= {"VM", "TM"}
    assert len(read_prompts("nemo:non_memorized")) == 500


def test_csv_with_a_label_column(tmp_path):
    c = tmp_path / "p.csv"
    c.write_text("Prompt,label\na cat,memorized\na dog,non_memorized\n")
    assert [(r.text, r.memorized) for r in read_prompts(c)] == [("a cat", True), ("a dog", False)]
    t = tmp_path / "p.tsv"
    t.write_text("text\tlabel\na cat\t1\n")
    assert read_prompts(t)[0].memorized is True


@pytest.mark.parametrize("name,content,needle", [
    ("bad.jsonl", '{"caption": "ok"}\n{"caption": \n', "line 2"),
    ("nofield.jsonl", '{"url": "x"}\n', "no caption/prompt/text field"),
    ("badlabel.jsonl", '{"caption": "x", "label": "maybe"}\n', "label 'maybe'"),
    ("nocol.csv", "url,index\nx,1\n", "no caption/prompt/text column"),
    ("short.csv", "caption,label\na cat,1,extra\n", "line 2"),
    ("empty.txt", "\n\n", "no prompts"),
])
def test_malformed_files_name_the_problem_and_line(tmp_path, name, content, needle):
    (tmp_path / name).write_text(content)
    with pytest.raises(PromptFileError, match=needle):
        read_prompts(tmp_path / name)


def test_missing_files_and_unknown_sets():
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompts("no/such/file.txt")
    with pytest.raises(PromptFileError, match="nemo:memorized"):
        read_prompts("nemo:everything")
    with pytest.raises(PromptFileError, match="no prompt file"):
        read_many([])
