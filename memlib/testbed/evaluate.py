"""Measuring the testbed: how often each prompt group replicates training images, and whether held-out
prompts produce recognisable images (testbed CLIP score, caption retrieval, Fréchet distance).

The replication criterion is the Gu ratio of ``memlib.metrics`` (d1/d2 < 1/3, nearest training image in the
planted cluster for planted prompts), applied identically to every group; the copy-similarity criterion is
reported beside it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..backends.testbed import TestbedBackend
from ..config import Config, check_range
from ..device import CPU, Compute, ComputeParams
from ..generation import Generation, GenerationConfig, generate
from ..metrics import COPY_COSINE_THRESHOLD, GU_RATIO_THRESHOLD, ReplicationIndex, frechet_distance
from .build import Testbed, TestbedRef
from .clip import ClipScorer
from .data import Prompt, canonical_caption, render_captions

CRITERION = (f"Gu et al. ratio: l2 to nearest training image / l2 to nearest image of another cluster "
             f"< {GU_RATIO_THRESHOLD:.3f}; for planted prompts the nearest image must be the planted one "
             f"(cluster-aware). Pixel space, images in [-1, 1], 16x16 RGB.")
EVAL_GROUPS = ("verbatim", "verbatim_knob", "image_dup", "caption_dup", "heldout", "random")

# The README's results table (``memlib results``): (metric key written by ``to_metrics``, what it is, target)
HEADLINES = [
    ("verbatim_replication_rate", "planted specific prompts that copy their image", ">= 0.80"),
    ("heldout_replication_rate", "held-out compositional prompts that copy", "<= 0.05"),
    ("image_dup_replication_rate", "image-duplication prompts that copy", "measured"),
    ("caption_dup_replication_rate", "caption-duplication prompts that copy", "measured"),
    ("heldout_clip_score", "testbed CLIP score, held-out generations", "> random caption"),
    ("heldout_clip_score_random_caption", "... same images vs a random caption", ""),
    ("heldout_top1_retrieval", "held-out generations: top-1 caption retrieval (320)", "report"),
]



@dataclass
class TestbedNotebookConfig(ComputeParams, Config):
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
    device: str = "auto"             # where networks run: 'auto' (cuda, mps, else cpu), 'cpu', 'cuda'
    dtype: str = "fp32"              # forward passes: 'fp32'; 'fp16' or 'bf16' on a GPU only

    def validate(self) -> None:
        self.check_compute()   # before any model loads: half precision on the CPU is refused
        check_range("max_prompts_per_group", self.max_prompts_per_group, 0)
        check_range("gen_batch_size", self.gen_batch_size, 1)
        self.generation_config()  # checks n_gens, num_steps and guidance_scale under the same names

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                batch_size=self.gen_batch_size, seed=self.seed)


@dataclass
class GroupStats:
    """How one prompt group's generations fare."""
    n_prompts: int
    replication_rate: float       # Gu criterion (planted prompts: nearest image in the planted cluster)
    copy_rate: float              # copy-similarity criterion
    median_ratio: float           # median d1/d2
    clip_score: float             # testbed CLIP score with the prompt


@dataclass
class HeldoutStats:
    """Do held-out compositional prompts give the image they ask for?"""
    clip_score: float
    clip_score_random_caption: float   # the same images against a random ordinary caption
    top1_retrieval: float              # best of every combination's canonical caption names the prompt's
    retrieval_chance: float
    reference_top1_retrieval: float    # the same for fresh renderings of the captions (the ceiling)
    reference_clip_score: float
    frechet_distance: float            # testbed-CLIP features, generations vs fresh renderings


@dataclass
class TestbedEvaluation:
    """Notebook 00's results: per-generation arrays behind the plots and the summary as typed fields."""
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
    groups: dict[str, GroupStats]
    memorized_clip_score: float   # verbatim prompts' CLIP score with their own prompt
    heldout: HeldoutStats | None
    knob_replication: dict[int, float]   # copies in training -> replication rate (the verbatim_knob group)
    gen_cfg: GenerationConfig

    def to_metrics(self) -> dict:
        m: dict = {"criterion": CRITERION, "copy_cosine_threshold": COPY_COSINE_THRESHOLD,
                   "n_generations_per_prompt": self.gen_cfg.n_gens, "guidance_scale": self.gen_cfg.guidance_scale,
                   "num_steps": self.gen_cfg.num_steps, "memorized_clip_score": self.memorized_clip_score}
        for g, st in self.groups.items():
            m.update({f"{g}_{k}": v for k, v in asdict(st).items()})
        if self.heldout is not None:
            m.update({("retrieval_chance" if k == "retrieval_chance" else f"heldout_{k}"): v
                      for k, v in asdict(self.heldout).items()})
        m.update({f"knob_{c}x_replication_rate": r for c, r in self.knob_replication.items()})
        return m


def measured_replication(metrics: dict) -> dict[str, float]:
    """Replication rate per prompt group from a notebook-00 ``metrics.json`` (what ``to_metrics`` wrote)."""
    return {g: metrics[f"{g}_replication_rate"] for g in EVAL_GROUPS if f"{g}_replication_rate" in metrics}


def _rate(mask: np.ndarray, sel: np.ndarray) -> float:
    return float(mask[sel].mean()) if sel.any() else float("nan")


def evaluate_testbed(tb: Testbed, clip: ClipScorer, gen_cfg: GenerationConfig | None = None,
                     groups=EVAL_GROUPS, max_per_group: int | None = None, reference_per_caption: int = 4,
                     progress: bool = True, compute: Compute = CPU) -> TestbedEvaluation:
    """Notebook 00's measurements; the testbed samples on ``compute`` (the model is moved there), every metric
    runs on the CPU."""
    gen_cfg = gen_cfg or GenerationConfig()
    prompts = [p for g in groups for p in tb.data.prompts_in(g)[:max_per_group]]
    if not prompts:
        raise ValueError(f"no prompts in groups {groups}; choose from {EVAL_GROUPS}")
    backend = TestbedBackend(tb.model.to(compute.device), tb, compute.dtype)
    gen = generate(backend, [p.text for p in prompts], gen_cfg, progress=progress)
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
    ratio = res.ratio.reshape(P, G)
    stats = {g: GroupStats(int((group == g).sum()), _rate(replicated, group == g), _rate(copy_match, group == g),
                           float(np.median(ratio[group == g])) if (group == g).any() else float("nan"),
                           _rate(clip_score, group == g)) for g in groups}
    held = group == "heldout"
    heldout = None
    if held.any():
        # retrieval ranks the canonical phrasing of every combination; a hit names the prompt's combination
        hits = np.array([[p.group == "heldout" and r == canonical_caption(p.text) for r in rr]
                         for rr, p in zip(retrieved, prompts)])
        held_caps = [p.text for p in prompts if p.group == "heldout"]
        ref = render_captions(held_caps, reference_per_caption, seed=gen_cfg.seed + 1, size=flat.shape[-1])
        ref_caps = [c for c in held_caps for _ in range(reference_per_caption)]
        heldout = HeldoutStats(
            clip_score=_rate(clip_score, held), clip_score_random_caption=_rate(clip_random, held),
            top1_retrieval=_rate(hits, held), retrieval_chance=1 / len(vocab),
            reference_top1_retrieval=float(np.mean(
                [a == canonical_caption(b) for a, b in zip(clip.retrieve(ref, sorted(vocab)), ref_caps)])),
            reference_clip_score=float(clip.score(ref, ref_caps).mean()),
            frechet_distance=frechet_distance(feats[np.repeat(held, G)].numpy(), clip.image_features(ref).numpy()))
    knob = {c: _rate(replicated, np.array([p.group == "verbatim_knob" and p.copies == c for p in prompts]))
            for c in sorted({p.copies for p in prompts if p.group == "verbatim_knob"})}
    return TestbedEvaluation(prompts, gen, replicated, copy_match, ratio, res.nn_index.reshape(P, G), clip_score,
                             clip_random, retrieved, stats, _rate(clip_score, group == "verbatim"), heldout, knob,
                             gen_cfg)


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
