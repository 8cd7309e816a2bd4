"""Anti-Memorization Guidance as one sampler hook (Chen, Liu, Xu, CVPR 2024, Sec. 5; Eqs. 10, 13-17).

At every step the hook finds the nearest training sample n0 of x0_hat (from the current guided estimate, Eq. 12)
and its similarity sigma_t, compares it with lambda_t (``threshold``) and adds, where it fires,

    despecification   G_spe = -s1 (eps_c - eps_u),    s1 = clip(c1 sigma_t, 0, s0 - 1)             (Eqs. 13-14)
    deduplication     G_dup = -s2 (eps(x_t, y_N) - eps_u),  s2 = clip(c2 sigma_t, 0, s0 - 1 - s1)  (Eqs. 15-16)
    dissimilarity     G_sim = +c3 sqrt(1 - abar_t) grad_{x_t} sigma_t                            (Eq. 17)

so eps = eps_u + (s0 - s1)(eps_c - eps_u) - s2 (eps_N - eps_u) + G_sim and the prompt keeps weight >= 1.

- ``mode='paper'``: one indicator sigma_t > lambda_t gates all three terms (Eq. 10); y_N defaults to n0's caption.
- ``mode='code'`` (the released SD code): G_spe acts at every step with sigma_t > 0; G_dup fires above lambda_t and
  acts on ``hold`` steps from its last firing, that step included (the code's g3_count = 10: the firing step and
  the 9 after); G_sim is gated on sigma recomputed after G_spe/G_dup; y_N defaults to the most frequent caption
  among the top-k neighbours.
- ``schedule`` (G_sim's weight; the paper gives no value): 'constant' is Eq. 17's c3; 'code' is the released SD
  code's c3 (sigma - 0.3) exp((1000 - t) / 170), with sigma - lambda_t in place of sigma - 0.3 (0.3 is the SD
  threshold's asymptote; lambda_t keeps the factor positive exactly where the switch fires, on any sigma scale),
  clipped at 0. The level is ``threshold.curve(t)``: with the switch always on it is a constant below the
  held-out trajectories (``Threshold.always_on``), so the factor does not switch G_sim either.
- The gradient of sigma is taken through x0_hat with eps held fixed, as both released codes do (no backprop
  through the UNet): grad_{x_t} sigma = grad_{x0} sigma / sqrt(abar_t). ``to_pixels`` maps x0_hat into the
  index's space and the gradient flows through it: a latent model's decoder when the index holds images, or the
  decoder and a feature extractor (SSCD, CLIP image features) when the user builds the index from those features.
- y_N's conditioning joins the batched model call as an extra branch from the step after it is chosen; on the
  step it is first chosen, eps(x_t, y_N) comes from one extra call on those rows only (counted in the NFE).
- sigma is pixel NCC (the SSCD stand-in, object level) or -nL2 (k = 50, alpha = 0.5; pixel level), from
  ``memlib.mitigate.similarity.SimilarityIndex``. When nothing fires the hook returns None: sampling is then
  bit-identical to plain CFG.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from ..mitigate.similarity import SimilarityIndex
from ..sampling import StepState
from .threshold import Threshold

TERMS = ("spe", "dup", "sim")
BRANCH = "amg_dup"
TRACES = ("sigma", "lam", "fired", "spe", "dup", "sim")


@dataclass(frozen=True)
class AMGSettings:
    """The guidance's settings (Eqs. 13-17). The paper gives no c1, c2 or c3 (its supplement's values are not
    public). The released SD code's c1 = 13 saturates s1 at s0 - 1 once sigma > (s0 - 1) / 13 (on SSCD, above
    0.5: every triggering step), which caps s2 at s0 - 1 - s1 = 0, so deduplication never acts while
    despecification does. c1 = 1 and c2 = 2 keep both in play on a similarity near 1 (pixel NCC of a copy): at
    sigma = 0.9 and s0 = 3, s1 = 0.9 and s2 = 1.1 share the s0 - 1 = 2 budget. ``memlib.amg.methods.main_settings``
    is AMG Main on the testbed (these defaults with the code schedule and the c3 chosen on the dev half)."""
    terms: tuple = TERMS             # which guidance terms act (Table 4's ablation)
    mode: str = "paper"              # 'paper' (everything gated) or 'code' (the released SD code's gating)
    c1: float = 1.0                  # despecification per unit sigma (capped at s0 - 1)
    c2: float = 2.0                  # deduplication per unit sigma (capped at s0 - 1 - s1)
    c3: float = 1.0                  # dissimilarity scale
    similarity: str = "ncc"          # 'ncc' (object level) or 'nl2' (sigma = -nL2, pixel level)
    k: int = 50                      # nL2's neighbours
    alpha: float = 0.5               # nL2's alpha
    caption: str = ""                # y_N: 'nn' (n0's caption) or 'topk' (most frequent among top-k); '' = mode's
    topk: int = 50                   # neighbours searched for the most frequent caption
    min_count: int = 3               # ... which must occur at least this often
    hold: int = 10                   # code mode: G_dup acts on this many steps from its last firing, that one included
    schedule: str = ""               # G_sim weight: 'constant' (c3, Eq. 17) or 'code'
                                     # (c3 (sigma - lambda_t) e^((1000 - t) / 170)); '' = the mode's

    def __post_init__(self):
        bad = [t for t in self.terms if t not in TERMS]
        if bad or not self.terms:
            raise ValueError(f"AMG terms {self.terms!r}: choose a non-empty subset of {TERMS}")
        if self.mode not in ("paper", "code"):
            raise ValueError(f"AMG mode {self.mode!r}: choose 'paper' or 'code'")
        if self.similarity not in ("ncc", "nl2"):
            raise ValueError(f"AMG similarity {self.similarity!r}: choose 'ncc' or 'nl2'")
        if self.schedule not in ("", "constant", "code"):
            raise ValueError(f"AMG schedule {self.schedule!r}: choose 'constant' or 'code'")
        if self.caption not in ("", "nn", "topk"):
            raise ValueError(f"AMG caption {self.caption!r}: choose 'nn' or 'topk'")
        if min(self.c1, self.c2, self.c3) < 0 or self.k < 1 or self.topk < 1 or self.hold < 0:
            raise ValueError("AMG scales c1, c2, c3 must be >= 0 and k, topk >= 1, hold >= 0")

    @property
    def caption_rule(self) -> str:
        return self.caption or ("nn" if self.mode == "paper" else "topk")

    @property
    def sim_schedule(self) -> str:
        return self.schedule or ("constant" if self.mode == "paper" else "code")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def nearest(index: SimilarityIndex, px: torch.Tensor, how: str = "ncc", k: int = 50, alpha: float = 0.5):
    """(sigma (B,), nearest training row (B,)) of pixel images ``px``: NCC, or -nL2 (higher = more similar)."""
    if how == "ncc":
        sigma, nn = index.topk_ncc(px, 1)
        return sigma[:, 0], nn[:, 0]
    nl2, nn = index.nl2(px, k, alpha)
    return -nl2, nn


def similarity_and_grad(index: SimilarityIndex, x0: torch.Tensor, how: str = "ncc", k: int = 50,
                        alpha: float = 0.5, to_pixels: Callable | None = None):
    """(sigma (B,), d sigma / d x0 (B, ...)) of each x0 against its nearest training sample; the neighbour is held
    fixed for the gradient (its choice is piecewise constant), as AMG's code treats it as a constant."""
    with torch.enable_grad():
        x = x0.detach().float().requires_grad_(True)
        px = to_pixels(x) if to_pixels else x
        if how == "ncc":
            sigma = index.ncc_to(px, index.topk_ncc(px.detach(), 1)[1][:, 0])
        else:
            sigma = -index.nl2(px, k, alpha)[0]
        (g,) = torch.autograd.grad(sigma.sum(), x)
    return sigma.detach(), g


def neighbour_caption(index: SimilarityIndex, captions: list[str], px: torch.Tensor, nn: int,
                      cfg: AMGSettings) -> str | None:
    """y_N for one image ``px``: n0's caption (rule 'nn', the paper), or the most frequent caption among its top-k
    neighbours if it occurs at least ``min_count`` times (rule 'topk', the released code; else None)."""
    if cfg.caption_rule == "nn":
        return captions[nn]
    q = px[None]
    score = (index.ncc(q) if cfg.similarity == "ncc" else -index.l2(q))[0]
    top = score.topk(min(cfg.topk, len(index))).indices.tolist()
    text, count = Counter(captions[r] for r in top).most_common(1)[0]
    return text if count >= cfg.min_count else None


class AMGGuidance:
    """The hook for one batch. ``captions``/``encode`` (training captions, text -> embeddings) are needed for
    G_dup; ``record`` ({trace: (rows, steps) array}) and ``rows`` (this batch's rows in it) collect per-step
    traces: sigma, lambda, whether the switch fired, and each term's weight (s1, s2, the G_sim scale)."""

    def __init__(self, settings: AMGSettings, index: SimilarityIndex, threshold: Threshold,
                 captions: list[str] | None = None, encode: Callable | None = None,
                 to_pixels: Callable | None = None, record: dict | None = None, rows=None):
        if "dup" in settings.terms and (captions is None or encode is None):
            raise ValueError("AMG's caption deduplication needs the training captions and a text encoder; "
                             "drop 'dup' from terms for unconditional or class-conditional models")
        if captions is not None and len(captions) != len(index):
            raise ValueError(f"{len(captions)} captions for an index of {len(index)} training samples")
        self.cfg, self.index, self.threshold = settings, index, threshold
        self.captions, self.encode, self.to_pixels = captions, encode, to_pixels
        self.record, self.rows = record, rows
        self.y_n: list[str | None] = []        # each row's current negative caption
        self.left: np.ndarray | None = None    # code mode: steps after this one that G_dup still acts on
        self.in_branch: list[str | None] | None = None   # what the branch computed this step holds per row
        self._emb: dict[str, torch.Tensor] = {}

    # -- helpers --------------------------------------------------------------------------------------------
    def _embed(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._emb]
        if new:
            with torch.no_grad():
                self._emb.update(zip(new, self.encode(new)))
        return torch.stack([self._emb[t] for t in texts])

    def _neighbour_caption(self, px: torch.Tensor, nn: int) -> str | None:
        return neighbour_caption(self.index, self.captions, px, nn, self.cfg)

    def _trace(self, i: int, num_steps: int, **values) -> None:
        if self.record is None:
            return
        n = self.record["_rows"]
        for name, v in values.items():
            arr = self.record.setdefault(name, np.full((n, num_steps), np.nan, np.float32))
            arr[np.asarray(self.rows), i] = np.asarray(v, np.float32)

    # -- the step -------------------------------------------------------------------------------------------
    def __call__(self, s: StepState):
        cfg, B, t = self.cfg, s.x.shape[0], s.t
        if not self.y_n:
            self.y_n, self.left = [None] * B, np.zeros(B, int)
        lam = float(self.threshold(t))
        with torch.no_grad():
            px = self.to_pixels(s.x0_hat) if self.to_pixels else s.x0_hat
            sig, nn = nearest(self.index, px, cfg.similarity, cfg.k, cfg.alpha)
        fire = (sig > lam).cpu().numpy()
        shape = (-1,) + (1,) * (s.eps.dim() - 1)
        sg = sig.to(s.eps.dtype).view(shape)
        mask = torch.as_tensor(fire, device=sg.device).view(shape)
        s0 = s.guidance_scale if s.cond is not None else 1.0
        eps, zeros = s.eps, torch.zeros_like(sg)
        s1 = s2 = w = zeros
        if "spe" in cfg.terms:
            gate = (sg > 0) if cfg.mode == "code" else mask
            s1 = torch.where(gate, (cfg.c1 * sg).clamp(0, max(s0 - 1, 0)), zeros)
            eps = eps - s1 * (s.eps_cond - s.eps_uncond)
        if "dup" in cfg.terms:
            eps, s2 = self._dedup(s, eps, px, nn, sg, s0, s1, fire)
        if "sim" in cfg.terms:
            sig2, g = similarity_and_grad(self.index, s.x0_from(eps), cfg.similarity, cfg.k, cfg.alpha,
                                          self.to_pixels)
            g = g.to(eps.dtype) / s.alpha_bar ** 0.5            # d sigma / d x_t with eps held fixed
            sg2 = sig2.to(eps.dtype).view(shape)
            gate = (sg2 > lam) if cfg.mode == "code" else mask
            level = float(self.threshold.curve(t))
            scale = (cfg.c3 * (sg2 - level).clamp_min(0) * float(np.exp((1000 - t) / 170))
                     if cfg.sim_schedule == "code" else torch.full_like(sg, cfg.c3))
            w = torch.where(gate, scale, zeros)
            eps = eps + w * (1 - s.alpha_bar) ** 0.5 * g
        if not torch.isfinite(eps).all():
            raise FloatingPointError(f"AMG produced a non-finite noise estimate at t={t}; lower c3 (now {cfg.c3})")
        acted = (s1 > 0) | (s2 > 0) | (w > 0)
        self._trace(s.i, s.num_steps, sigma=sig.cpu(), lam=np.full(B, lam), fired=fire,
                    spe=s1.flatten().cpu(), dup=s2.flatten().cpu(), sim=w.flatten().cpu())
        return eps if bool(acted.any()) else None

    def _dedup(self, s: StepState, eps, px, nn, sg, s0: float, s1, fire: np.ndarray):
        """G_dup: choose y_N where the switch fires; eps(x_t, y_N) comes from the branch, or from one extra call
        for rows whose y_N is new; the branch is requested for the next step while any row still uses it."""
        cfg, B = self.cfg, len(fire)
        for b in np.flatnonzero(fire):
            cap = self._neighbour_caption(px[b], int(nn[b]))
            if cap is not None:
                self.y_n[b], self.left[b] = cap, max(cfg.hold - 1, 0)
        if cfg.mode == "code":   # fires, or fired within the last `hold` steps (counting the firing one)
            active = np.array([y is not None for y in self.y_n]) & (fire | (self.left > 0))
            self.left = np.where(fire, self.left, np.maximum(self.left - 1, 0))
        else:
            active = np.array([y is not None for y in self.y_n]) & fire
        s2 = torch.zeros_like(sg)
        if active.any():
            have = s.eps_branches.get(BRANCH)
            rows = np.flatnonzero(active)
            fresh = [int(b) for b in rows if have is None or self.in_branch[b] != self.y_n[b]]
            eps_n = s.eps_uncond.clone()
            if have is not None:
                keep = [int(b) for b in rows if b not in fresh]
                eps_n[keep] = have[keep]
            if fresh:
                with torch.no_grad():
                    eps_n[fresh] = s.denoise(s.x[fresh], torch.as_tensor(s.t, device=s.x.device),
                                             self._embed([self.y_n[b] for b in fresh]))
            act = torch.as_tensor(active, device=sg.device).view_as(sg)
            cap = (max(s0 - 1, 0) - s1).clamp_min(0)
            s2 = torch.where(act, torch.minimum(cfg.c2 * sg, cap).clamp_min(0), s2)
            eps = eps - s2 * (eps_n - s.eps_uncond)
        # the next step's batched call computes eps(x_t, y_N) for every row that may use it
        if active.any() and s.uncond is not None:
            none = torch.as_tensor([y is None for y in self.y_n], device=s.x.device)
            emb = self._embed([y or "" for y in self.y_n])   # rows without a y_N: the unconditional embedding
            emb = torch.where(none.view(-1, *[1] * (emb.dim() - 1)), s.uncond.expand_as(emb), emb)
            s.branches[BRANCH], self.in_branch = emb, list(self.y_n)
        else:
            s.branches.pop(BRANCH, None)
            self.in_branch = None
        return eps, s2
