"""Candidate rewrites for PRSS's semantic prompt search (Chen et al., CVPR 2025, Sec. 4.2).

The paper asks GPT-4 for up to 25 paraphrases per prompt that keep its meaning (the released rewrites keep named
entities). Three sources, one interface (prompt -> list of candidates, never the prompt itself):

- ``TestbedParaphraser``: built from the testbed grammar. A testbed prompt is an ordinary caption (size, colour,
  shape, position in one of four phrasings) plus at most one extra word (a trigger or style word). Candidates
  re-phrase the caption in every other phrasing (modifiers reordered; no content attribute is ever dropped) and
  put the extra word at the end or at the front. Like the paper's rewrites, which keep named entities, they keep
  the trigger; ``drop_trigger=True`` also offers the bare caption.
- ``JsonlCandidates``: the reference code's file format, one JSON object per line with the prompt under
  ``caption`` and its rewrites under ``caption1`` ... ``captionK``.
- any callable ``prompt -> list[str]`` (a local language model, for instance).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..prompts import load_prompt_jsonl   # validates every line; errors name the file and line
from ..testbed.data import TEMPLATES, combo_of, ordinary_caption


def split_testbed_prompt(text: str) -> tuple[tuple[str, str, str, str], str]:
    """(combination, extra word or '') of a testbed prompt: an ordinary caption with at most one word added."""
    try:
        return combo_of(text), ""
    except ValueError:
        pass
    words = text.split()
    for i in range(len(words)):
        rest = " ".join(words[:i] + words[i + 1:])
        try:
            return combo_of(rest), words[i]
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a testbed prompt (an ordinary caption plus at most one word); give "
                     "candidates another way (a jsonl file or a callable)")


class TestbedParaphraser:
    """Rewrites of testbed prompts that keep every content attribute (and, by default, the trigger)."""
    __test__ = False

    def __init__(self, drop_trigger: bool = False):
        self.drop_trigger = drop_trigger

    def __call__(self, text: str) -> list[str]:
        combo, extra = split_testbed_prompt(text)
        out: list[str] = []
        for k in range(len(TEMPLATES)):
            phrase = ordinary_caption(*combo, template=k)
            forms = [f"{phrase} {extra}", f"{extra} {phrase}"] if extra else [phrase]
            if extra and self.drop_trigger:
                forms.append(phrase)
            out += forms
        return [c for c in dict.fromkeys(out) if c != text]


class JsonlCandidates:
    """Candidates from a jsonl file in the reference format (``caption``, ``caption1`` ... ``captionK``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.table: dict[str, list[str]] = {}
        for row in load_prompt_jsonl(path, "caption", records=True):
            keys = sorted((k for k in row if k.startswith("caption") and k[7:].isdigit()), key=lambda k: int(k[7:]))
            self.table[row["caption"]] = [row[k] for k in keys if row[k] and row[k] != row["caption"]]

    def __call__(self, text: str) -> list[str]:
        if text not in self.table:
            raise KeyError(f"{self.path} has no candidates for {text!r}")
        return list(self.table[text])


def candidate_source(spec) -> Callable[[str], list[str]]:
    """'testbed', 'testbed-drop-trigger', a .jsonl path, or a callable."""
    if callable(spec):
        return spec
    if spec == "testbed":
        return TestbedParaphraser()
    if spec == "testbed-drop-trigger":
        return TestbedParaphraser(drop_trigger=True)
    if isinstance(spec, (str, Path)) and str(spec).endswith(".jsonl"):
        return JsonlCandidates(spec)
    raise ValueError(f"candidate source {spec!r}: give 'testbed', 'testbed-drop-trigger', a .jsonl file or a callable")
