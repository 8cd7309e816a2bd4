"""The columns of the mitigation table, one ``MethodRow`` per method and knob value (Wen et al. 2024 Sec. 4.3
report SSCD similarity and CLIP score; AMG and PRSS add replication rates and FID). On the testbed:

- **Privacy** (memorized prompts), per group and pooled, with intervals that resample planted images (two captions
  of one image are not independent):
  (a) the paper's criterion: replication by the pixel Gu ratio (d1/d2 < 1/3, nearest image in the planted
  cluster), with the mean and 95th percentile of the pixel NCC to the planted image;
  (b) the independent copy detector's copy rate (``memlib.copydetect``, trained self-supervised and calibrated on
  held-out data; no method optimizes it), the headline privacy column, and the Gu ratio after a low-pass filter
  as a parameter-free second opinion;
  (c) the share whose nearest training image (pixel l2) is the planted one; its chance level is the same share
  for generations of the content caption alone (``run.run_content_reference``).
  Per-prompt values stay on the row (``per_prompt``, ``units``) for paired comparisons between rows
  (``paired``); they are not written to the metrics.
- **Utility**: testbed-CLIP score against the original prompt, against the content caption, and averaged over
  every phrasing of the content's combination (``clip_phrasings``: a reference a rewriting method cannot emit
  verbatim, where the content caption is one string a trigger-dropping rewrite can produce); top-1 retrieval
  of the prompt's combination among all 320; Fréchet distance (testbed-CLIP features) of memorized generations
  against fresh renderings of their content captions and of held-out generations against renderings of their
  captions, each beside the noise floor (two independent rendering sets of the same captions).
- **Cost**: seconds and model evaluations per image; the share of held-out prompts the method acted on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..copydetect import CopyDetector, lowpass_gu_ratio
from ..metrics import ReplicationIndex, frechet_distance
from ..paired_bootstrap import PairedDifference, paired_difference, unit_mean
from ..testbed.copy_detector import load_testbed_detector
from ..testbed.data import TEMPLATES, canonical_caption, combo_of, ordinary_caption, render_captions
from .evalset import MEMORIZED_GROUPS, EvalPrompt
from .similarity import SimilarityIndex


# not written to metrics.json: per-prompt arrays (paired comparisons in-process) and wall-clock seconds, which
# differ on every rerun (a study writes them to timings.json, ``MethodRow.timings``)
_NOT_METRICS = ("per_prompt", "units", "groups", "seconds_per_image")


@dataclass
class MethodRow:
    """One method at one knob value on one prompt set."""
    method: str
    knob: str
    value: float
    half: str
    n_prompts: dict[str, int]
    n_gens: int
    seed: int
    replication: dict[str, float]             # Gu ratio, per memorized group and 'memorized' pooled
    replication_ci: dict[str, tuple[float, float]]   # bootstrap over planted images, per group and pooled
    nn_is_planted: dict[str, float]
    similarity_mean: dict[str, float]         # NCC to the planted image
    similarity_p95: dict[str, float]
    clip_content: dict[str, float]            # 'memorized' and 'heldout'
    clip_content_ci: dict[str, tuple[float, float]]
    clip_original: dict[str, float]
    retrieval_top1: dict[str, float]
    frechet: dict[str, float]                 # 'memorized', 'heldout'
    frechet_floor: dict[str, float]
    heldout_replication: float
    seconds_per_image: float
    evals_per_image: float
    acted_heldout: float
    acted_memorized: float
    truncated_share: float                    # prompts whose rewrite exceeded the text encoder's context
    extra: dict[str, float] = field(default_factory=dict)
    copy_rate: dict[str, float] = field(default_factory=dict)       # independent copy detector, (b)
    copy_rate_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    lowpass_replication: dict[str, float] = field(default_factory=dict)   # Gu ratio after a low-pass filter
    clip_phrasings: dict[str, float] = field(default_factory=dict)  # mean CLIP over every phrasing of the content
    clip_phrasings_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # for paired comparisons
    units: np.ndarray | None = field(default=None, repr=False)      # each prompt's independent unit
    groups: np.ndarray | None = field(default=None, repr=False)     # each prompt's group

    def to_metrics(self) -> dict:
        out = {}
        for k, v in asdict(self).items():
            if k in _NOT_METRICS:
                continue
            if isinstance(v, dict):
                out.update({f"{k}_{g}": (list(x) if isinstance(x, tuple) else x) for g, x in v.items()})
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def timings(self) -> dict:
        """What this row cost in wall-clock time, for timings.json."""
        return {"label": f"{self.method} ({self.knob} = {self.value:g})", "seconds_per_image": self.seconds_per_image,
                "images": self.n_gens * sum(self.n_prompts.values())}


PRIVACY_HEADER = ("independent copy rate [95 % CI] | pixel Gu replication [95 % CI] | "
                  "nearest is planted (content-caption chance)")


def privacy_cells(r: dict, chance: float | None = None) -> str:
    """The three privacy columns of a row: (b) the independent detector's copy rate, (a) the paper's pixel
    criterion, (c) nearest-is-planted beside its chance level (``chance``: the content-caption row's share)."""
    def ci(key):
        v, c = r.get(f"{key}_memorized", float("nan")), r.get(f"{key}_ci_memorized")
        return f"{v:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")
    nn = r.get("nn_is_planted_memorized", float("nan"))
    return (f"{ci('copy_rate')} | {ci('replication')} | {nn:.2f}"
            + (f" ({chance:.2f})" if chance is not None else ""))


def markdown_row(label: str, r: dict, extra: str) -> str:
    """One method's row of a results table: replication with its interval, per planted group, NCC to the
    planted image, content and held-out CLIP, then ``extra`` (a paper's own column), then the cost per image."""
    ci = r["replication_ci_memorized"]
    groups = " / ".join(f"{r.get(f'replication_{g}', float('nan')):.2f}" for g in MEMORIZED_GROUPS)
    return (f"| {label} | {r['replication_memorized']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {groups} | "
            f"{r['similarity_mean_memorized']:.3f} | {r['clip_content_memorized']:.3f} | "
            f"{r['clip_content_heldout']:.3f} | {extra} | "
            f"{r['evals_per_image']:.0f}" + (f" / {1e3 * r['seconds_per_image']:.0f}" if "seconds_per_image" in r else "")
            + " |")


def _mean(x) -> float:
    x = np.asarray(x, float)
    return float(x.mean()) if x.size else float("nan")


def prompt_units(prompts: list[EvalPrompt]) -> np.ndarray:
    """Each prompt's independent unit: its planted image for a memorized prompt (the image-duplication group has
    two captions per image), its combination for a held-out prompt (phrasings of one combination)."""
    return np.array([f"planted-{p.cluster}" if p.cluster >= 0 else f"combination-{canonical_caption(p.content)}"
                     for p in prompts])


def paired(a: MethodRow, b: MethodRow, column: str, group: str = "memorized", relative: bool = False,
           seed: int = 0) -> PairedDifference:
    """b's ``column`` ('replication', 'copy', 'nn_planted', 'clip_content', 'clip_phrasings', 'similarity') minus a's over the same
    prompts and noises, with an interval that resamples units (``memlib.paired_bootstrap``)."""
    for r in (a, b):
        if column not in r.per_prompt or r.units is None:
            raise ValueError(f"row {r.method} ({r.knob} = {r.value:g}) has no per-prompt {column!r}: compare rows "
                             f"scored in this process (per-prompt values are not stored in the metrics)")
    if a.units.shape != b.units.shape or (a.units != b.units).any():
        raise ValueError(f"rows {a.method} and {b.method} were scored on different prompts; a paired comparison "
                         f"needs the same prompts and noises")
    sel = np.isin(a.groups, MEMORIZED_GROUPS) if group == "memorized" else a.groups == group
    return paired_difference(a.per_prompt[column][sel], b.per_prompt[column][sel], a.units[sel],
                             seed=seed, relative=relative)


class Evaluator:
    """Scores generations of the evaluation prompts; built once per testbed (indexes, CLIP, reference sets)."""

    def __init__(self, data, clip, detector: CopyDetector | None, seed: int = 0, reference_per_caption: int = 4):
        """``detector``: the independent copy detector of this testbed (``memlib.testbed.copy_detector``); None
        leaves its column unmeasured (NaN)."""
        self.data, self.clip, self.seed, self.ref_n = data, clip, seed, reference_per_caption
        self.detector = detector
        self.train_descriptors = detector.embed(data.images) if detector is not None else None
        self.index = ReplicationIndex(data.images, data.cluster)
        self.sim = SimilarityIndex(data.images)
        self.vocab = sorted(data.combos_train + data.combos_heldout)
        self._ref: dict = {}
        self._text: dict[str, torch.Tensor] = {}      # text features, encoded once per distinct text
        self.cluster_rows = {int(c): np.flatnonzero(data.cluster == c)
                             for c in np.unique(data.cluster[data.group != "generic"])}

    @classmethod
    def for_testbed(cls, ref, tb, clip, seed: int = 0, progress: bool = False, device=None) -> "Evaluator":
        """The evaluator of testbed ``ref`` (loaded as ``tb``) with that testbed's own copy detector (loaded, else
        trained and calibrated once; ``memlib.testbed.copy_detector``), run on ``device``."""
        return cls(tb.data, clip, load_testbed_detector(ref, progress=progress, device=device), seed=seed)

    def _references(self, captions: tuple[str, ...]):
        """Features of two independent rendering sets of ``captions`` and their Fréchet distance (the floor)."""
        if captions not in self._ref:
            size = self.data.images.shape[-1]
            a = self.clip.image_features(render_captions(list(captions), self.ref_n, self.seed + 1, size)).numpy()
            b = self.clip.image_features(render_captions(list(captions), self.ref_n, self.seed + 2, size)).numpy()
            self._ref[captions] = (a, frechet_distance(a, b))
        return self._ref[captions]

    def text_features(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._text]
        if new:
            self._text.update(zip(new, self.clip.text_features(new)))
        return torch.stack([self._text[t] for t in texts])

    def _score(self, feats: torch.Tensor, texts: list[str]) -> np.ndarray:
        return (feats * self.text_features(texts)).sum(-1).numpy()

    def _score_phrasings(self, feats: torch.Tensor, contents: list[str]) -> np.ndarray:
        """Mean CLIP score against every phrasing (``TEMPLATES``) of each content caption's combination: a
        reference no rewrite can emit verbatim, unlike the content caption itself."""
        combos = [combo_of(canonical_caption(c)) for c in contents]
        return np.mean([self._score(feats, [ordinary_caption(*c, template=k) for c in combos])
                        for k in range(len(TEMPLATES))], axis=0)

    def _retrieve(self, feats: torch.Tensor) -> list[str]:
        return [self.vocab[i] for i in (feats @ self.text_features(self.vocab).T).argmax(1).tolist()]

    def planted_similarity(self, flat: torch.Tensor, clusters: np.ndarray) -> np.ndarray:
        """Max NCC of each generation with its planted cluster's images (NaN without a planted cluster)."""
        out = np.full(len(flat), np.nan)
        ncc = self.sim.ncc(flat).numpy()
        for i, c in enumerate(clusters):
            if c >= 0:
                out[i] = ncc[i, self.cluster_rows[int(c)]].max()
        return out

    def score(self, prompts: list[EvalPrompt], images: torch.Tensor, *, method: str, knob: str, value: float,
              seconds_per_image: float, evals_per_image: float, acted: np.ndarray,
              truncated: np.ndarray | None = None, seed: int = 0, extra: dict | None = None) -> MethodRow:
        """``images``: (P, G, C, H, W) in [0, 1] for ``prompts``."""
        P, G = images.shape[:2]
        if P != len(prompts):
            raise ValueError(f"{P} image rows for {len(prompts)} prompts")
        flat = images.flatten(0, 1).float() * 2 - 1
        group = np.array([p.group for p in prompts])
        clusters = np.array([p.cluster for p in prompts])
        planted = np.repeat(clusters, G)
        res = self.index.query(flat)
        rep = res.replicated(planted).reshape(P, G).mean(1)
        lowpass = lowpass_gu_ratio(flat, self.data.images, self.data.cluster).replicated(planted).reshape(P, G).mean(1)
        copy = np.full(P, np.nan)
        if self.detector is not None:
            copy = (self.detector.nearest(flat, self.train_descriptors)[1] > self.detector.threshold)
            copy = copy.reshape(P, G).mean(1)
        nn_planted = (res.nn_cluster == planted).reshape(P, G).mean(1)
        sim = self.planted_similarity(flat, planted).reshape(P, G)
        feats = self.clip.image_features(flat)
        content = [p.content for p in prompts for _ in range(G)]
        clip_c = self._score(feats, content).reshape(P, G).mean(1)
        clip_p = self._score_phrasings(feats, content).reshape(P, G).mean(1)
        clip_o = self._score(feats, [p.text for p in prompts for _ in range(G)]).reshape(P, G).mean(1)
        hits = np.array([r == canonical_caption(c) for r, c in zip(self._retrieve(feats), content)])
        hits = hits.reshape(P, G).mean(1)
        mem = np.isin(group, MEMORIZED_GROUPS)
        held = group == "heldout"
        sets = {"memorized": mem, "heldout": held}
        by_group = {g: group == g for g in MEMORIZED_GROUPS if (group == g).any()}
        pooled = dict(by_group, memorized=mem) if mem.any() else by_group
        units = prompt_units(prompts)
        fd, floor, ci = {}, {}, {}
        for name, sel in sets.items():
            if sel.sum() >= 2:
                ref, fl = self._references(tuple(p.content for p, s in zip(prompts, sel) if s))
                gen_feats = feats.numpy().reshape(P, G, -1)[sel]
                fd[name] = frechet_distance(gen_feats.reshape(-1, gen_feats.shape[-1]), ref)
                floor[name] = fl
                ci[name] = unit_mean(clip_c[sel], units[sel], seed=seed)[1]
        return MethodRow(
            method, knob, float(value), ",".join(sorted({p.half for p in prompts})),
            {g: int((group == g).sum()) for g in sorted(set(group))}, G, seed,
            {g: _mean(rep[s]) for g, s in pooled.items()},
            {g: unit_mean(rep[s], units[s], seed=seed)[1] for g, s in pooled.items()},
            {g: _mean(nn_planted[s]) for g, s in pooled.items()},
            {g: _mean(sim[s]) for g, s in pooled.items()},
            {g: float(np.percentile(sim[s], 95)) for g, s in pooled.items()},
            {k: _mean(clip_c[s]) for k, s in sets.items() if s.any()}, ci,
            {k: _mean(clip_o[s]) for k, s in sets.items() if s.any()},
            {k: _mean(hits[s]) for k, s in sets.items() if s.any()},
            fd, floor, _mean(rep[held]), float(seconds_per_image), float(evals_per_image),
            _mean(np.asarray(acted)[held]), _mean(np.asarray(acted)[mem]),
            _mean(truncated) if truncated is not None else 0.0, dict(extra or {}),
            copy_rate={g: _mean(copy[s]) for g, s in pooled.items()},
            copy_rate_ci={g: unit_mean(copy[s], units[s], seed=seed)[1] for g, s in pooled.items()
                          if self.detector is not None},
            lowpass_replication={g: _mean(lowpass[s]) for g, s in pooled.items()},
            clip_phrasings={k: _mean(clip_p[s]) for k, s in sets.items() if s.any()},
            clip_phrasings_ci={k: unit_mean(clip_p[s], units[s], seed=seed)[1] for k, s in sets.items() if s.any()},
            per_prompt={"replication": rep, "copy": copy, "nn_planted": nn_planted, "clip_content": clip_c, "clip_phrasings": clip_p,
                        "similarity": sim.mean(1)},
            units=units, groups=group)
