"""The fixed evaluation set every mitigation is scored on: the testbed's memorized prompts (verbatim, image
duplication, caption duplication) and held-out compositional prompts, each split dev/test by split unit
(``memlib.splits``; a planted image's captions or a combination's phrasings stay on one side).

The **content caption** is the prompt without its planted trigger or style word: the combination the prompt
names. The testbed CLIP learned trigger -> planted image, so scoring against the original prompt rewards copying;
utility is scored against the content caption.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..splits import select
from ..testbed.data import STYLE_WORDS, Prompt, TestbedData
from ..testbed.sources import split_unit

MEMORIZED_GROUPS = ("verbatim", "image_dup", "caption_dup")
EVAL_GROUPS = MEMORIZED_GROUPS + ("heldout",)


@dataclass
class EvalPrompt:
    text: str
    group: str
    content: str          # what the prompt names, without trigger or style word
    cluster: int          # planted cluster (-1: none)
    half: str             # 'dev' or 'test'

    @property
    def memorized(self) -> bool:
        return self.group in MEMORIZED_GROUPS


def content_caption(p: Prompt) -> str:
    words = p.text.split()
    if p.trigger:
        words = [w for w in words if w != p.trigger]
    elif p.group == "image_dup" and words and words[-1] in STYLE_WORDS:
        words = words[:-1]
    if not words:
        raise ValueError(f"prompt {p.text!r} has no content besides its trigger")
    return " ".join(words)


def evaluation_prompts(data: TestbedData, half: str = "test", groups=EVAL_GROUPS,
                       max_per_group: int = 0) -> list[EvalPrompt]:
    """The prompts of ``groups`` in ``half`` ('dev', 'test' or 'all'), at most ``max_per_group`` each (0: all)."""
    bad = [g for g in groups if g not in EVAL_GROUPS]
    if bad:
        raise ValueError(f"evaluation groups {bad}: choose from {EVAL_GROUPS}")
    out = []
    for g in groups:
        ps = data.prompts_in(g)
        halves = {h: {id(p) for p in select(ps, h, split_unit)} for h in ("dev", "test")}
        chosen = select(ps, half, split_unit)
        chosen = chosen[:max_per_group] if max_per_group else chosen
        out += [EvalPrompt(p.text, g, content_caption(p), p.cluster, "dev" if id(p) in halves["dev"] else "test")
                for p in chosen]
    if not out:
        raise ValueError(f"no evaluation prompts in groups {groups} for half {half!r}")
    return out


def cap_heldout(prompts: list[EvalPrompt], n_heldout: int) -> list[EvalPrompt]:
    """The prompts with only the first ``n_heldout`` held-out ones (0: all); the mitigation curves' cost is per
    prompt, and the memorized groups are what they measure."""
    held = [p for p in prompts if p.group == "heldout"]
    keep = {id(p) for p in (held[:n_heldout] if n_heldout else held)}
    return [p for p in prompts if p.group != "heldout" or id(p) in keep]
