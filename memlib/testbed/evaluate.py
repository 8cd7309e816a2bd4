"""Measuring the testbed: how often each prompt group replicates training images, and whether held-out
prompts produce recognisable images (testbed CLIP score, caption retrieval, Fréchet distance).

The replication criterion is the Gu ratio of ``memlib.metrics`` (d1/d2 < 1/3, nearest training image in the
planted cluster for planted prompts), applied identically to every group; the copy-similarity criterion is
reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.testbed import TestbedBackend
from ..config import Config, check_range
from ..generate import Generation, GenerationConfig, generate
from ..metrics import COPY_COSINE_THRESHOLD, GU_RATIO_THRESHOLD, ReplicationIndex, frechet_distance
from .build import Testbed, TestbedRef
from .clip import ClipScorer
from .data import Prompt, canonical_caption, render_captions

CRITERION = (f"Gu et al. ratio: l2 to nearest training image / l2 to nearest image of another cluster "
             f"< {GU_RATIO_THRESHOLD:.3f}; for planted prompts the nearest image must be the planted one "
             f"(cluster-aware). Pixel space, images in [-1, 1], 16x16 RGB.")
EVAL_GROUPS = ("verbatim", "verbatim_knob", "image_dup", "caption_dup", "heldout", "random")


@dataclass
class TestbedNotebookConfig(Config):
    """Parameters of notebooks/00_testbed.ipynb."""
    __test__ = False  # not a pytest test class
    testbed: TestbedRef = field(default_factory=TestbedRef)  # flat parameters testbed_preset, testbed_seed, ...
    retrain: bool = False            # ignore a finished checkpoint and train again
    n_gens: int = 4                  # generations per evaluated prompt
    num_steps: int = 50              # DDIM steps
    guidance_scale: float = 3.0      # CFG scale (3 replicates more than 7.5 at this scale; see shared notes)
    gen_batch_size: int = 128
    max_prompts_per_group: int = 0   # 0 = every prompt of each group
    seed: int = 0                    # generation seed (initial noises)
    progress: bool = True            # progress bars

    def validate(self) -> None:
        check_range("max_prompts_per_group", self.max_prompts_per_group, 0)
        check_range("gen_batch_size", self.gen_batch_size, 1)
        self.generation_config()  # checks n_gens, num_steps and guidance_scale under the same names

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                batch_size=self.gen_batch_size, seed=self.seed)


@dataclass
class TestbedEvaluation:
    __test__ = False  # not a pytest test class
    prompts: list[Prompt]
    generation: Generation
    replicated: np.ndarray        # (P, G) bool, Gu criterion
    copy_match: np.ndarray        # (P, G) bool, copy cosine criterion
    ratio: np.ndarray             # (P, G) d1/d2
    nn_index: np.ndarray          # (P, G) nearest training row
    clip_score: np.ndarray        # (P, G) CLIP score with the prompt
    clip_random: np.ndarray       # (P, G) CLIP score with a random ordinary caption
    retrieved: list[list[str]]    # (P, G) best ordinary caption
    metrics: dict


def _rate(mask: np.ndarray, sel: np.ndarray) -> float:
    return float(mask[sel].mean()) if sel.any() else float("nan")


def evaluate_testbed(tb: Testbed, clip: ClipScorer, gen_cfg: GenerationConfig | None = None,
                     groups=EVAL_GROUPS, max_per_group: int | None = None, reference_per_caption: int = 4,
                     progress: bool = True) -> TestbedEvaluation:
    gen_cfg = gen_cfg or GenerationConfig()
    prompts = [p for g in groups for p in tb.data.prompts_in(g)[:max_per_group]]
    if not prompts:
        raise ValueError(f"no prompts in groups {groups}; choose from {EVAL_GROUPS}")
    gen = generate(TestbedBackend(tb.model, tb), [p.text for p in prompts], gen_cfg, progress=progress)
    P, G = len(prompts), gen_cfg.n_gens
    flat = gen.images.flatten(0, 1) * 2 - 1
    res = ReplicationIndex(tb.data.images, tb.data.cluster).query(flat)
    planted = np.repeat([p.cluster for p in prompts], G)
    replicated = res.replicated(planted).reshape(P, G)
    in_cluster = np.where(planted >= 0, res.nn_cluster == planted, True)
    copy_match = ((res.copy_cosine > COPY_COSINE_THRESHOLD) & in_cluster).reshape(P, G)

    texts = [p.text for p in prompts for _ in range(G)]
    rng = np.random.default_rng(gen_cfg.seed)
    vocab = tb.data.combos_train + tb.data.combos_heldout
    random_caps = [vocab[i] for i in rng.integers(len(vocab), size=len(texts))]
    feats = clip.image_features(flat)  # encoded once, reused for scores, retrieval and the Fréchet distance
    clip_score = clip.score(feats, texts).reshape(P, G)
    clip_random = clip.score(feats, random_caps).reshape(P, G)
    retrieved_flat = clip.retrieve(feats, sorted(vocab))
    retrieved = [retrieved_flat[i * G:(i + 1) * G] for i in range(P)]

    group = np.array([p.group for p in prompts])
    m: dict = {"criterion": CRITERION, "copy_cosine_threshold": COPY_COSINE_THRESHOLD,
               "n_generations_per_prompt": G, "guidance_scale": gen_cfg.guidance_scale,
               "num_steps": gen_cfg.num_steps}
    for g in groups:
        sel = group == g
        m[f"{g}_n_prompts"] = int(sel.sum())
        m[f"{g}_replication_rate"] = _rate(replicated, sel)
        m[f"{g}_copy_rate"] = _rate(copy_match, sel)
        m[f"{g}_median_ratio"] = float(np.median(res.ratio.reshape(P, G)[sel])) if sel.any() else float("nan")
        m[f"{g}_clip_score"] = _rate(clip_score, sel)
    memorized = np.isin(group, ["verbatim"])
    m["memorized_clip_score"] = _rate(clip_score, memorized)
    held = group == "heldout"
    if held.any():
        m["heldout_clip_score"] = _rate(clip_score, held)
        m["heldout_clip_score_random_caption"] = _rate(clip_random, held)
        # retrieval ranks the canonical phrasing of every combination; a hit names the prompt's combination
        hits = np.array([[p.group == "heldout" and r == canonical_caption(p.text) for r in rr]
                         for rr, p in zip(retrieved, prompts)])
        m["heldout_top1_retrieval"] = _rate(hits, held)
        m["retrieval_chance"] = 1 / len(vocab)
        held_caps = [p.text for p in prompts if p.group == "heldout"]
        ref = render_captions(held_caps, reference_per_caption, seed=gen_cfg.seed + 1, size=flat.shape[-1])
        ref_caps = [c for c in held_caps for _ in range(reference_per_caption)]
        m["heldout_reference_top1_retrieval"] = float(np.mean(
            [a == canonical_caption(b) for a, b in zip(clip.retrieve(ref, sorted(vocab)), ref_caps)]))
        m["heldout_reference_clip_score"] = float(clip.score(ref, ref_caps).mean())
        m["heldout_frechet_distance"] = frechet_distance(feats[np.repeat(held, G)].numpy(),
                                                         clip.image_features(ref).numpy())
    knob = [p for p in prompts if p.group == "verbatim_knob"]
    for c in sorted({p.copies for p in knob}):
        sel = np.array([p.group == "verbatim_knob" and p.copies == c for p in prompts])
        m[f"knob_{c}x_replication_rate"] = _rate(replicated, sel)
    return TestbedEvaluation(prompts, gen, replicated, copy_match, res.ratio.reshape(P, G),
                             res.nn_index.reshape(P, G), clip_score, clip_random, retrieved, m)


def pair_rows(ev: TestbedEvaluation, tb: Testbed, group: str, n: int = 8) -> list[dict]:
    """Rows for ``plotting.show_pairs``: first generation of the first ``n`` prompts of ``group``."""
    rows = []
    for i, p in enumerate(ev.prompts):
        if p.group != group or len(rows) >= n:
            continue
        verdict = "COPY" if ev.replicated[i, 0] else "novel"
        rows.append({"gen": ev.generation.images[i, 0], "nn": tb.data.images[ev.nn_index[i, 0]],
                     "caption": p.text, "label": f"{verdict}, d1/d2={ev.ratio[i, 0]:.2f}"})
    return rows


def group_examples(tb: Testbed) -> tuple[torch.Tensor, list[str]]:
    """One training image per planted group and two ordinary ones, with their captions."""
    idx = []
    for g in ("generic", "verbatim", "verbatim_knob", "image_dup", "caption_dup"):
        rows = np.flatnonzero(tb.data.group == g)
        idx += list(rows[: (3 if g in ("generic", "caption_dup") else 2)])
    return tb.data.images[idx], [f"[{tb.data.group[i]}] {tb.data.captions[i]}" for i in idx]
