"""Notebook 04's paired comparisons (Chen, Liu, Xu, CVPR 2024, judged as every mitigation notebook is): two rows
scored on the same prompts and noises, b minus a per column, with intervals that resample planted images
(``memlib.mitigate.columns.paired``). Stored in the metrics, so each claim's verdict comes from its interval.

Columns: 'copy' (the independent detector's copy rate, the headline), 'replication' (the pixel Gu ratio, the
paper's criterion), 'lowpass' (the Gu ratio after a low-pass filter), 'nn_planted' (nearest training image is
the planted one), 'clip_phrasings' (utility no rewrite can emit verbatim) and 'clip_content'; '<column>_<group>'
per memorized group, 'clip_phrasings_heldout' on held-out prompts and 'clip_phrasings_relative' as a relative
change (the "within x %" claims).
"""
from __future__ import annotations

import numpy as np

from ..mitigate.columns import MethodRow, paired
from ..mitigate.evalset import MEMORIZED_GROUPS

COLUMNS = ("copy", "replication", "lowpass", "nn_planted", "clip_phrasings", "clip_content")
BY_GROUP = ("copy", "replication")


def compare(a: MethodRow, b: MethodRow, seed: int = 0, by_group: bool = False) -> dict:
    """b minus a on every column both rows carry (``PairedDifference.to_dict``), memorized prompts pooled, held-out
    utility, the relative utility change, and with ``by_group`` the privacy columns per memorized group."""
    out = {}
    have = [c for c in COLUMNS if c in a.per_prompt and c in b.per_prompt]
    for c in have:
        if np.isfinite(a.per_prompt[c][np.isin(a.groups, MEMORIZED_GROUPS)]).all() and \
                np.isfinite(b.per_prompt[c][np.isin(b.groups, MEMORIZED_GROUPS)]).all():
            out[c] = paired(a, b, c, seed=seed).to_dict()
    for c in (c for c in BY_GROUP if c in out and by_group):
        for g in MEMORIZED_GROUPS:
            if (a.groups == g).any():
                out[f"{c}_{g}"] = paired(a, b, c, group=g, seed=seed).to_dict()
    if "clip_phrasings" in have:
        if (a.groups == "heldout").any():
            out["clip_phrasings_heldout"] = paired(a, b, "clip_phrasings", group="heldout", seed=seed).to_dict()
        out["clip_phrasings_relative"] = paired(a, b, "clip_phrasings", relative=True, seed=seed).to_dict()
    return out


def compare_all(base: MethodRow, rows: dict[str, MethodRow], seed: int = 0) -> dict:
    """{label: compare(base, row)} for every row but ``base`` itself."""
    return {label: compare(base, row, seed) for label, row in rows.items() if row is not base}
