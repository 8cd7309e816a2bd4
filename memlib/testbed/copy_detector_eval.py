"""Notebook 00's check of the independent copy detector (``memlib.copydetect``; an SSCD analogue, Pizzi et al.,
CVPR 2022) on the testbed, beside the pixel Gu ratio (Gu et al., TMLR 2025) it backs up.

- Separation: AUC of the similarity to the nearest training image, generations of the planted verbatim prompts
  (positives) against generations of held-out prompts on the test half (negatives), from the notebook's plain-CFG
  generations.
- False copies: the share of held-out generations and of fresh renderings of held-out combinations called
  copies, on the development half (where the threshold was calibrated) and the test half.
- Transfer: the same detector and threshold on another testbed seed, that seed's training images as references.
- Robustness: the share of the planted training images (one per planted cluster) still called copies of their
  own cluster under increasing Gaussian noise, sign (speckle) noise, Gaussian blur and shift, for the detector,
  the pixel Gu ratio and the low-pass Gu ratio (``copydetect.lowpass_gu_ratio``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..copydetect import CopyDetector, false_copy_rate, gaussian_blur, lowpass_gu_ratio
from ..device import CPU, Compute
from ..generation import GenerationConfig, generate
from ..metrics import GU_RATIO_THRESHOLD, ReplicationIndex, roc
from ..splits import HALVES
from .build import Testbed, TestbedRef
from .copy_detector import AMG_SPECKLE_RMS, RECIPES, heldout_renders, heldout_texts, unique_rows
from .evaluate import TestbedEvaluation

# perturbation -> (levels, x-axis label); pixel values are in [-1, 1]
PERTURBATIONS = {
    "gaussian_noise": ((0.0, 0.1, 0.2, 0.3, 0.4, 0.5), "Gaussian noise: standard deviation"),
    "speckle": ((0.0, 0.1, 0.2, 0.3, 0.4, 0.5), "sign noise: +-amplitude per pixel"),
    "blur": ((0.0, 0.5, 1.0, 1.5, 2.0), "Gaussian blur: sigma (pixels)"),
    "shift": ((0, 1, 2, 3), "shift (pixels; edge repeated)"),
}
CRITERIA = {"detector": "copy detector", "pixel_gu": "pixel Gu ratio", "lowpass_gu": "low-pass Gu ratio"}


def perturb(images: torch.Tensor, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """``images`` (N, C, S, S) in [-1, 1] perturbed by ``kind`` at ``level`` (natural units, see PERTURBATIONS);
    shifts go right, down, left, up in turn; results are clipped to [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian_noise":
        out = images + level * torch.randn(images.shape, generator=gen)
    elif kind == "speckle":
        out = images + level * torch.randn(images.shape, generator=gen).sign()
    elif kind == "blur":
        out = gaussian_blur(images, level)
    elif kind == "shift":
        s, (h, w) = int(level), images.shape[-2:]
        pad = F.pad(images, (s, s, s, s), mode="replicate")
        moves = [(0, s), (s, 0), (0, -s), (-s, 0)]
        out = torch.stack([pad[i, :, s - moves[i % 4][0]:s - moves[i % 4][0] + h,
                               s - moves[i % 4][1]:s - moves[i % 4][1] + w] for i in range(len(images))])
    else:
        raise ValueError(f"perturbation {kind!r}: choose one of {sorted(PERTURBATIONS)}")
    return out.clamp(-1, 1)


def robustness(detector: CopyDetector, tb: Testbed, seed: int = 0) -> dict:
    """{perturbation: {'levels', 'detector', 'pixel_gu', 'lowpass_gu'}}: the share of planted training images
    called copies of their own cluster at each level."""
    data = tb.data
    first = unique_rows(data.cluster)
    rows = first[data.group[first] != "generic"]
    if len(rows) == 0:
        raise ValueError("the testbed has no planted images to perturb")
    planted, clusters = data.images[rows], data.cluster[rows]
    refs, index = detector.embed(data.images), ReplicationIndex(data.images, data.cluster)
    out = {"n_images": len(rows)}
    for kind, (levels, _) in PERTURBATIONS.items():
        curves = {k: [] for k in CRITERIA}
        for level in levels:
            x = perturb(planted, kind, level, seed)
            nn, sim = detector.nearest(x, refs)
            curves["detector"].append(float(((sim > detector.threshold) & (data.cluster[nn] == clusters)).mean()))
            curves["pixel_gu"].append(float(index.query(x).replicated(clusters).mean()))
            lowpass = lowpass_gu_ratio(x, data.images, data.cluster)
            curves["lowpass_gu"].append(float(lowpass.replicated(clusters).mean()))
        out[kind] = {"levels": list(levels), **curves}
    return out


@dataclass
class CopyDetectEvaluation:
    checkpoint: str
    threshold: float
    auc: float                  # verbatim vs held-out (test half) generations, detector similarity
    auc_pixel_gu: float         # the same with -d1/d2 as the score
    verbatim_copy_rate: float   # verbatim generations called copies of their planted image
    false_copy: dict            # {half: {'generations': rate, 'renders': rate}}
    n_negatives: dict           # {half: {'generations': n, 'renders': n}}
    transfer: dict              # another testbed seed: seed, auc, false-copy rates
    robustness: dict

    def to_metrics(self) -> dict:
        m = {"copydetect_checkpoint": self.checkpoint, "copydetect_threshold": self.threshold,
             "copydetect_auc_verbatim_vs_heldout": self.auc, "copydetect_auc_pixel_gu": self.auc_pixel_gu,
             "copydetect_verbatim_copy_rate": self.verbatim_copy_rate, "copydetect_robustness": self.robustness}
        for h, rates in self.false_copy.items():
            m.update({f"copydetect_false_copy_rate_{k}_{h}": v for k, v in rates.items()})
            m.update({f"copydetect_n_{k}_{h}": v for k, v in self.n_negatives[h].items()})
        s = self.transfer["seed"]
        m.update({f"copydetect_seed{s}_{k}": v for k, v in self.transfer.items() if k != "seed"})
        return m


@dataclass
class _Scored:
    """Flat generations scored against a testbed's training images."""
    sim: np.ndarray             # detector similarity to the nearest training image
    copy: np.ndarray            # sim > threshold and that image in the prompt's planted cluster (if any)
    ratio: np.ndarray           # pixel Gu ratio d1/d2
    group: np.ndarray

    def auc(self, negatives: np.ndarray, score: str = "sim") -> float:
        v = self.sim if score == "sim" else -self.ratio
        return roc(v[self.group == "verbatim"], v[negatives]).auc


def _score(detector: CopyDetector, tb: Testbed, prompts, images: torch.Tensor) -> _Scored:
    """``images`` (P, G, C, S, S) in [0, 1], generations of ``prompts`` (each with .group and .cluster)."""
    G = images.shape[1]
    flat = images.flatten(0, 1) * 2 - 1
    nn, sim = detector.nearest(flat, tb.data.images)
    planted = np.repeat([p.cluster for p in prompts], G)
    in_cluster = np.where(planted >= 0, tb.data.cluster[nn] == planted, True)
    ratio = ReplicationIndex(tb.data.images, tb.data.cluster).query(flat).ratio
    return _Scored(sim, (sim > detector.threshold) & in_cluster, ratio, np.repeat([p.group for p in prompts], G))


def _render_rate(detector: CopyDetector, tb: Testbed, texts: list[str], preset: str) -> tuple[float, int]:
    renders = heldout_renders(texts, RECIPES[preset], tb.data.images.shape[-1])
    return false_copy_rate(detector.nearest(renders, tb.data.images)[1], detector.threshold), len(renders)


def evaluate_copy_detector(detector: CopyDetector, ev: TestbedEvaluation, tb: Testbed, ref: TestbedRef,
                           gen_cfg: GenerationConfig, progress: bool = False,
                           compute: Compute = CPU) -> CopyDetectEvaluation:
    """The checks of the module docstring, from notebook 00's generations ``ev`` of testbed ``tb`` (``ref``); the
    other testbed of the transfer check samples on ``compute``."""
    halves = {h: heldout_texts(tb.data, h) for h in HALVES}
    G = ev.generation.images.shape[1]
    half_of = np.repeat([next((h for h in HALVES if p.text in halves[h]), "") if p.group == "heldout" else ""
                         for p in ev.prompts], G)
    if not ((half_of == "dev").any() and (half_of == "test").any() and any(p.group == "verbatim" for p in ev.prompts)):
        raise ValueError("the copy-detector check needs the verbatim prompts and held-out prompts of both halves "
                         "among the evaluated prompts (max_prompts_per_group = 0)")
    s = _score(detector, tb, ev.prompts, ev.generation.images)
    false_copy, counts = {}, {}
    for h in HALVES:
        neg = s.sim[half_of == h]
        rate, n = _render_rate(detector, tb, halves[h], ref.preset)
        false_copy[h] = {"generations": false_copy_rate(neg, detector.threshold), "renders": rate}
        counts[h] = {"generations": int(len(neg)), "renders": n}
    return CopyDetectEvaluation(
        checkpoint=detector.name, threshold=detector.threshold, auc=s.auc(half_of == "test"),
        auc_pixel_gu=s.auc(half_of == "test", "ratio"), verbatim_copy_rate=float(s.copy[s.group == "verbatim"].mean()),
        false_copy=false_copy, n_negatives=counts,
        transfer=transfer(detector, replace(ref, seed=other_seed(ref.seed)), gen_cfg, progress, compute),
        robustness=robustness(detector, tb))


def other_seed(seed: int) -> int:
    """The testbed seed the detector of ``seed`` is carried over to: 1, or 0 for seed 1."""
    return 0 if seed == 1 else 1


def transfer(detector: CopyDetector, ref: TestbedRef, gen_cfg: GenerationConfig, progress: bool = False,
             compute: Compute = CPU) -> dict:
    """The detector, threshold unchanged, on testbed ``ref`` (its training images as references): AUC of
    verbatim against held-out test-half generations and the held-out test half's false-copy rates."""
    from ..backends.testbed import TestbedBackend

    tb = ref.load(progress=progress, device=compute.device)
    held = set(heldout_texts(tb.data, "test"))
    prompts = tb.data.prompts_in("verbatim") + [p for p in tb.data.prompts_in("heldout") if p.text in held]
    gen = generate(TestbedBackend(tb.model, tb, compute.dtype), [p.text for p in prompts], gen_cfg,
                   progress=progress)
    s = _score(detector, tb, prompts, gen.images)
    neg = s.group == "heldout"
    rate, n = _render_rate(detector, tb, sorted(held), ref.preset)
    return {"seed": ref.seed, "checkpoint": tb.folder.name, "auc": s.auc(neg), "auc_pixel_gu": s.auc(neg, "ratio"),
            "verbatim_copy_rate": float(s.copy[s.group == "verbatim"].mean()),
            "false_copy_rate_generations_test": false_copy_rate(s.sim[neg], detector.threshold),
            "false_copy_rate_renders_test": rate, "n_generations_test": int(neg.sum()), "n_renders_test": n}


def robustness_figure(rob: dict, threshold: float):
    """One panel per perturbation: share of planted training images called copies, per criterion."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PERTURBATIONS), figsize=(3.2 * len(PERTURBATIONS), 3), sharey=True)
    for ax, (kind, (_, label)) in zip(axes, PERTURBATIONS.items()):
        for key, name in CRITERIA.items():
            ax.plot(rob[kind]["levels"], rob[kind][key], "o-", label=name)
        if kind == "speckle":
            ax.axvline(AMG_SPECKLE_RMS, color="grey", ls=":", label="AMG Main: high-pass residual RMS")
        ax.set(xlabel=label, ylim=(-0.03, 1.03))
    axes[0].set_ylabel("planted images called copies")
    axes[list(PERTURBATIONS).index("speckle")].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Copies under perturbation ({rob['n_images']} planted training images; detector threshold "
                 f"{threshold:.3f}, Gu ratio < {GU_RATIO_THRESHOLD:.2f})", fontsize=10)
    fig.tight_layout()
    return fig
