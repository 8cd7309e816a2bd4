"""Threshold-aware augmentation (TAA; IET-AGC+, Guan et al., arXiv 2502.09434), as the authors' development code
does it (``../shared/papers/ietagc_liu.md`` Sec. 2.1): every sample AGC keeps joins a queue with its strength
s_i = exp(-kappa d_i) (``agc.taa_strength``); once the queue holds a batch, the first batch is taken and the rest
dropped, those digits are augmented with RandAugment(num_ops=2, magnitude=floor(mean s * A)), A = 5, and one
extra plain-mean gradient step is taken on them with fresh noise and timesteps. Borderline-memorizable samples
(just above the skip threshold) therefore drive the strongest augmentation.

RandAugment (torchvision v2) on the 8x8 digits: its ops shear, translate, rotate and change contrast but never
flip, so a digit stays a digit. The queue and counters live in the proxy's ``loss_state`` (checkpointed), and the
augmentation draws its seed from the training generator, so a resumed run takes the same steps.
"""
from __future__ import annotations

import torch

from .agc import AGCHook, augment_magnitude


def rand_augment(images: torch.Tensor, magnitude: int, seed: int, num_ops: int = 2) -> torch.Tensor:
    """RandAugment per image on [-1, 1] images (B, C, H, W), through uint8 as torchvision expects, seeded."""
    from torchvision.transforms import v2

    aug = v2.RandAugment(num_ops=num_ops, magnitude=int(magnitude))
    u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([aug(x) for x in u8])
    return out.float() / 127.5 - 1


class TAAStep:
    """An ``extra_step`` for ``memlib.train.train_loop`` that reads the AGC hook's latest kept samples."""

    def __init__(self, agc: AGCHook, images: torch.Tensor, loss_on, batch_size: int, base: int = 5,
                 num_ops: int = 2):
        if batch_size < 1 or base < 0:
            raise ValueError(f"TAA needs batch_size >= 1 and base >= 0 (got {batch_size}, {base})")
        self.agc, self.images, self.loss_on = agc, images, loss_on
        self.batch_size, self.base, self.num_ops = int(batch_size), int(base), int(num_ops)

    def __call__(self, step: int, gen: torch.Generator, state: dict) -> torch.Tensor | None:
        last = self.agc.last
        if not last:
            return None
        keep = last["keep"]
        rows = torch.cat([state.get("taa_rows", torch.zeros(0, dtype=torch.long)), last["rows"][keep]])
        strength = torch.cat([state.get("taa_strength", torch.zeros(0)), last["strength"][keep].float()])
        state.setdefault("taa_steps", torch.zeros((), dtype=torch.long))
        state.setdefault("taa_magnitude_sum", torch.zeros((), dtype=torch.long))
        if len(rows) < self.batch_size:
            state["taa_rows"], state["taa_strength"] = rows, strength
            return None
        # the first batch is used and the rest of the queue dropped, as the released code does
        take, s = rows[:self.batch_size], strength[:self.batch_size]
        state["taa_rows"], state["taa_strength"] = rows[:0], strength[:0]
        magnitude = augment_magnitude(s, self.base)
        seed = int(torch.randint(2 ** 62, (1,), generator=gen))
        x = rand_augment(self.images[take], magnitude, seed, self.num_ops)
        state["taa_steps"] += 1
        state["taa_magnitude_sum"] += magnitude
        return self.loss_on(x, gen).loss.mean()
