"""The three privacy columns of notebook 06's runs (IET-AGC, Liu et al., ECCV 2024; IET-AGC+, Guan et al., arXiv
2502.09434), kept per sample so that two runs compare paired:

(a) the papers' criterion: IET-AGC's memorization ratio under the threshold (``mem_score``), and Gu's ratio;
(b) the independent copy detector's call (``memlib.mitigate.digits``: the shipped digits descriptor, which no run
    trains against), the headline;
(c) whether the nearest training row is a planted duplicate, beside the same share for real held-out digits.

Every final model samples the same evaluation seeds, i.e. the same initial noises, so sample i of two runs is a
pair; ``paired`` resamples sample seeds (``memlib.paired_bootstrap``). The training seed is never resampled: runs
trained with one seed give an interval for that seed's models only; with several, the pairs of every seed pool and
the spread over seeds is reported beside.
"""
from __future__ import annotations

import numpy as np
import torch

from ..mitigate.digits import mq_ratio
from ..paired_bootstrap import paired_difference
from ..testbed.digits import DigitsDataConfig, make_digits_data

COLUMNS = ("mem_score", "copy_rate", "gu_replication", "nn_is_planted")


def sample_columns(scorer, x, tau: float) -> dict[str, np.ndarray]:
    """Per sample (0/1, NaN where the copy detector is missing): each column of ``COLUMNS``, as
    ``DigitsScorer.score`` and ``DigitsScorer.memorization`` count them."""
    x = x.clamp(-1, 1)
    nn = scorer.rep.query(x)
    return {"mem_score": (mq_ratio(x, scorer.unique) < tau).astype(float),
            "copy_rate": np.asarray(scorer.copies(x), float),
            "gu_replication": (nn.ratio < 1 / 3).astype(float),
            "nn_is_planted": np.isin(nn.nn_cluster, scorer.planted).astype(float)}


def _pooled(a_runs: list[dict], b_runs: list[dict], column: str):
    if len(a_runs) != len(b_runs) or not a_runs:
        raise ValueError(f"{len(a_runs)} runs against {len(b_runs)}: pair one run of each per training seed")
    a = np.concatenate([r[column] for r in a_runs])
    b = np.concatenate([r[column] for r in b_runs])
    units = np.concatenate([np.arange(len(r[column])) for r in a_runs])     # the sample seed
    return a, b, units


def paired(a_runs: list[dict], b_runs: list[dict], seed: int = 0) -> dict:
    """b minus a for each column (``PairedDifference.to_dict``; None where a column was not measured), pooling
    the pairs of every training seed (``a_runs[i]`` against ``b_runs[i]``) and resampling sample seeds."""
    out = {}
    for column in COLUMNS:
        a, b, units = _pooled(a_runs, b_runs, column)
        ok = np.isfinite(a).all() and np.isfinite(b).all()
        out[column] = paired_difference(a, b, units, seed=seed).to_dict() if ok else None
    return out


def relative_change(a_runs: list[dict], b_runs: list[dict], column: str, seed: int = 0) -> dict | None:
    """mean(b) / mean(a) - 1 over the pooled pairs, with its interval; None where a never counts (or is missing)."""
    a, b, units = _pooled(a_runs, b_runs, column)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or a.sum() == 0:
        return None
    return paired_difference(a, b, units, seed=seed, relative=True).to_dict()


def detector_record(scorer, data) -> dict:
    """What the copy detector was trained and calibrated on, beside the data these runs train on (its descriptors
    are compared with this data's training images either way)."""
    det = scorer.detector
    if det is None:
        return {}
    trained = det.trained_on
    cal = trained.get("calibration", {})
    seen = None
    if trained.get("data"):       # held-out digits of these runs that the detector trained on (other data only)
        own = make_digits_data(DigitsDataConfig(**trained["data"])).images.flatten(1)
        held = data.heldout_images.flatten(1)
        seen = float((torch.cdist(held, own).min(1).values == 0).float().mean()) if len(held) else 0.0
    return {"checkpoint": det.name, "threshold": det.threshold, "trained_on_data": trained.get("data"),
            "heldout_seen_by_detector": seen,
            "n_trained_images": trained.get("n_images"), "negatives": trained.get("negatives"),
            "max_false_rate": cal.get("max_false_rate"),
            "false_copy_rates": {h: v.get("heldout_digits") for h, v in cal.get("false_copy_rates", {}).items()},
            "runs_data": data.config.to_dict(), "same_data": trained.get("data") == data.config.to_dict()}
