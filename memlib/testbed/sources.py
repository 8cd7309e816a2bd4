"""Evaluation prompts of the testbed by source, as Verma et al. table Wen et al.'s detection per negative source
("Early signatures of memorization", App. I: LAION captions are the hard negatives, random strings the easy).

Negative sources (none of them memorized):
- ``heldout``: compositional prompts the model never saw, every held-out combination in every phrasing
  (``TEMPLATES``), so 64 combinations give 256 prompts. The phrasings of one combination share a split unit.
- ``random``: random BPE tokens that never occur in training captions (``data.prompts_in('random')``, then more
  from a separate random stream, so the trained data and its checkpoint stay as they are).
- ``generic``: trained but not memorized, the testbed's LAION: distinct ordinary training captions (each
  combination is trained on ``renderings_per_combo`` renderings with free backgrounds, so none is copied).

Every prompt carries a split unit (``memlib.splits``): a planted cluster, a combination, or the text itself.
"""
from __future__ import annotations

import numpy as np

from .data import TEMPLATES, Prompt, TestbedData, _random_token_prompts, combo_of, ordinary_caption

NEGATIVE_SOURCES = ("heldout", "generic", "random")
SOURCE_LABELS = {"heldout": "held-out compositional", "generic": "trained, not memorized (LAION-like)",
                 "random": "random tokens"}


def split_unit(p: Prompt) -> str:
    """What keeps related prompts on one side of the dev/test split."""
    if p.cluster >= 0:
        return f"cluster:{p.cluster}"
    if p.group in ("heldout", "generic"):
        return "combo:" + "|".join(combo_of(p.text))
    return "text:" + p.text


def heldout_prompts(data: TestbedData) -> list[Prompt]:
    """Every held-out combination in every phrasing."""
    return [Prompt(ordinary_caption(*combo_of(c), template=k), "heldout")
            for c in data.combos_heldout for k in range(len(TEMPLATES))]


def random_prompts(data: TestbedData, n: int) -> list[Prompt]:
    """The data's random-token prompts, topped up to ``n`` from a stream seeded apart from the data's own."""
    have = [p.text for p in data.prompts_in("random")]
    if n > len(have):
        rng = np.random.default_rng([data.config.seed, 0x5EED])
        more = _random_token_prompts(rng, data.config, data.captions, n=3 * (n - len(have)))
        have += [t for t in dict.fromkeys(more) if t not in set(have)]
    return [Prompt(t, "random") for t in have[:n]]


def generic_prompts(data: TestbedData, n: int, seed: int = 0) -> list[Prompt]:
    """``n`` distinct ordinary training captions, drawn without replacement (``seed``)."""
    caps = sorted({c for c, g in zip(data.captions, data.group) if g == "generic"})
    if n > len(caps):
        raise ValueError(f"asked for {n} trained-but-not-memorized captions; the data has {len(caps)}")
    pick = np.random.default_rng([data.config.seed, seed, 0x6E6]).choice(len(caps), size=n, replace=False)
    return [Prompt(caps[i], "generic") for i in sorted(pick)]


def negative_sources(data: TestbedData, n_random: int = 256, n_generic: int = 512,
                     max_per_source: int = 0) -> dict[str, list[Prompt]]:
    """{source: prompts} for ``NEGATIVE_SOURCES`` (``max_per_source`` caps each; 0 = all)."""
    out = {"heldout": heldout_prompts(data), "generic": generic_prompts(data, n_generic),
           "random": random_prompts(data, n_random)}
    return {k: (v[:max_per_source] if max_per_source else v) for k, v in out.items()}
