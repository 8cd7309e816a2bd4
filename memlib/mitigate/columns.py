"""The columns of the mitigation table, one ``MethodRow`` per method and knob value (Wen et al. 2024 Sec. 4.3
report SSCD similarity and CLIP score; AMG and PRSS add replication rates and FID). On the testbed:

- **Privacy** (memorized prompts): replication by the Gu ratio (d1/d2 < 1/3, nearest image in the planted
  cluster), the share whose nearest training image is the planted one, and the mean and 95th percentile of the
  similarity (pixel NCC) to the planted image, per group and pooled with a bootstrap interval over prompts.
- **Utility**: testbed-CLIP score against the original prompt and against the content caption; top-1 retrieval
  of the prompt's combination among all 320; Fréchet distance (testbed-CLIP features) of memorized generations
  against fresh renderings of their content captions and of held-out generations against renderings of their
  captions, each beside the noise floor (two independent rendering sets of the same captions).
- **Cost**: seconds and model evaluations per image; the share of held-out prompts the method acted on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..metrics import ReplicationIndex, bootstrap_mean, frechet_distance, percentile_interval
from ..testbed.data import canonical_caption, render_captions
from .evalset import MEMORIZED_GROUPS, EvalPrompt
from .similarity import SimilarityIndex


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
    replication_ci: dict[str, tuple[float, float]]   # bootstrap over prompts, per group and pooled
    nn_is_planted: dict[str, float]
    similarity_mean: dict[str, float]         # NCC to the planted image
    similarity_p95: dict[str, float]
    clip_content: dict[str, float]            # 'memorized' and 'heldout'
    clip_content_ci: dict[str, tuple[float, float]]
    clip_original: dict[str, float]
    retrieval_top1: dict[str, float]
    frechet: dict[str, float]                 # 'memorized', 'heldout'
    frechet_floor: dict[str, float]
    frechet_ci: dict[str, tuple[float, float]]   # bootstrap over prompts (empty unless the evaluator asks)
    heldout_replication: float
    seconds_per_image: float
    evals_per_image: float
    acted_heldout: float
    acted_memorized: float
    truncated_share: float                    # prompts whose rewrite exceeded the text encoder's context
    extra: dict[str, float] = field(default_factory=dict)

    def to_metrics(self) -> dict:
        out = {}
        for k, v in asdict(self).items():
            if isinstance(v, dict):
                out.update({f"{k}_{g}": (list(x) if isinstance(x, tuple) else x) for g, x in v.items()})
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out


def markdown_row(label: str, r: dict, extra: str) -> str:
    """One method's row of a results table: replication with its interval, per planted group, NCC to the
    planted image, content and held-out CLIP, then ``extra`` (a paper's own column), then the cost per image."""
    ci = r["replication_ci_memorized"]
    groups = " / ".join(f"{r.get(f'replication_{g}', float('nan')):.2f}" for g in MEMORIZED_GROUPS)
    return (f"| {label} | {r['replication_memorized']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {groups} | "
            f"{r['similarity_mean_memorized']:.3f} | {r['clip_content_memorized']:.3f} | "
            f"{r['clip_content_heldout']:.3f} | {extra} | "
            f"{r['evals_per_image']:.0f} / {1e3 * r['seconds_per_image']:.0f} |")


def _mean(x) -> float:
    x = np.asarray(x, float)
    return float(x.mean()) if x.size else float("nan")


class Evaluator:
    """Scores generations of the evaluation prompts; built once per testbed (indexes, CLIP, reference sets)."""

    def __init__(self, data, clip, seed: int = 0, reference_per_caption: int = 4, frechet_boot: int = 0):
        self.data, self.clip, self.seed, self.ref_n = data, clip, seed, reference_per_caption
        self.frechet_boot = frechet_boot          # bootstrap replicates of the Fréchet distance (0: none)
        self.index = ReplicationIndex(data.images, data.cluster)
        self.sim = SimilarityIndex(data.images)
        self.vocab = sorted(data.combos_train + data.combos_heldout)
        self._ref: dict = {}
        self._text: dict[str, torch.Tensor] = {}      # text features, encoded once per distinct text
        self.cluster_rows = {int(c): np.flatnonzero(data.cluster == c)
                             for c in np.unique(data.cluster[data.group != "generic"])}

    def _references(self, captions: tuple[str, ...]):
        """Features of two independent rendering sets of ``captions`` and their Fréchet distance (the floor)."""
        if captions not in self._ref:
            size = self.data.images.shape[-1]
            a = self.clip.image_features(render_captions(list(captions), self.ref_n, self.seed + 1, size)).numpy()
            b = self.clip.image_features(render_captions(list(captions), self.ref_n, self.seed + 2, size)).numpy()
            self._ref[captions] = (a, frechet_distance(a, b))
        return self._ref[captions]

    def _frechet_interval(self, gen_feats: np.ndarray, ref: np.ndarray, seed: int) -> tuple[float, float]:
        """Percentile interval of the Fréchet distance, prompts (with all their generations) resampled."""
        rng = np.random.default_rng(seed)
        reps = [frechet_distance(gen_feats[rng.integers(0, len(gen_feats), len(gen_feats))].reshape(
            -1, gen_feats.shape[-1]), ref) for _ in range(self.frechet_boot)]
        return percentile_interval(reps)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._text]
        if new:
            self._text.update(zip(new, self.clip.text_features(new)))
        return torch.stack([self._text[t] for t in texts])

    def _score(self, feats: torch.Tensor, texts: list[str]) -> np.ndarray:
        return (feats * self.text_features(texts)).sum(-1).numpy()

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
        nn_planted = (res.nn_cluster == planted).reshape(P, G).mean(1)
        sim = self.planted_similarity(flat, planted).reshape(P, G)
        feats = self.clip.image_features(flat)
        content = [p.content for p in prompts for _ in range(G)]
        clip_c = self._score(feats, content).reshape(P, G).mean(1)
        clip_o = self._score(feats, [p.text for p in prompts for _ in range(G)]).reshape(P, G).mean(1)
        hits = np.array([r == canonical_caption(c) for r, c in zip(self._retrieve(feats), content)])
        hits = hits.reshape(P, G).mean(1)
        mem = np.isin(group, MEMORIZED_GROUPS)
        held = group == "heldout"
        sets = {"memorized": mem, "heldout": held}
        by_group = {g: group == g for g in MEMORIZED_GROUPS if (group == g).any()}
        pooled = dict(by_group, memorized=mem) if mem.any() else by_group
        fd, floor, ci, fd_ci = {}, {}, {}, {}
        for name, sel in sets.items():
            if sel.sum() >= 2:
                ref, fl = self._references(tuple(p.content for p, s in zip(prompts, sel) if s))
                gen_feats = feats.numpy().reshape(P, G, -1)[sel]
                fd[name] = frechet_distance(gen_feats.reshape(-1, gen_feats.shape[-1]), ref)
                floor[name] = fl
                ci[name] = bootstrap_mean(clip_c[sel], seed=seed)[1]
                if self.frechet_boot:
                    fd_ci[name] = self._frechet_interval(gen_feats, ref, seed)
        return MethodRow(
            method, knob, float(value), ",".join(sorted({p.half for p in prompts})),
            {g: int((group == g).sum()) for g in sorted(set(group))}, G, seed,
            {g: _mean(rep[s]) for g, s in pooled.items()},
            {g: bootstrap_mean(rep[s], seed=seed)[1] for g, s in pooled.items()},
            {g: _mean(nn_planted[s]) for g, s in pooled.items()},
            {g: _mean(sim[s]) for g, s in pooled.items()},
            {g: float(np.percentile(sim[s], 95)) for g, s in pooled.items()},
            {k: _mean(clip_c[s]) for k, s in sets.items() if s.any()}, ci,
            {k: _mean(clip_o[s]) for k, s in sets.items() if s.any()},
            {k: _mean(hits[s]) for k, s in sets.items() if s.any()},
            fd, floor, fd_ci, _mean(rep[held]), float(seconds_per_image), float(evals_per_image),
            _mean(np.asarray(acted)[held]), _mean(np.asarray(acted)[mem]),
            _mean(truncated) if truncated is not None else 0.0, dict(extra or {}))
