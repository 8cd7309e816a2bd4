"""Wen et al.'s text-conditional noise magnitude (Wen, Liu, Chen, Lyu, ICLR 2024, Sec. 3.1), differentiable:

    m_j = || eps(x_t^j, e_p) - eps(x_t^j, e_empty) ||_2                 per image j, over the whole sample tensor
    M   = || stack_j (eps(x_t^j, e_p) - eps(x_t^j, e_empty)) ||_2 = sqrt(sum_j m_j^2)     the n-image batch

Detection averages m_j (``memlib.wen.scores``); attribution differentiates the mean of m_j, and Wen's reference
notebook differentiates M (``batch_magnitude``); Wen's mitigations (Sec. 4) minimize it over the prompt
embedding at inference, or screen out training samples where it is large. The per-image primitive ``magnitude``
lives in ``memlib.sampling``, because core modules (``memlib.generation`` records it during sampling) may not
import a paper package; it is re-exported here.
"""
from __future__ import annotations

import torch

from ..sampling import Denoiser, magnitude

__all__ = ["magnitude", "batch_magnitude", "model_magnitude"]


def batch_magnitude(eps_cond: torch.Tensor, eps_uncond: torch.Tensor) -> torch.Tensor:
    """M: one l2 norm over the whole n-image batch of differences (a scalar), the reference notebook's loss."""
    return (eps_cond - eps_uncond).norm()


def model_magnitude(denoise: Denoiser, x: torch.Tensor, t, cond: torch.Tensor, eps_uncond: torch.Tensor,
                    grad: bool = False, batch: bool = False) -> torch.Tensor:
    """Run the conditional branch on x_t and measure it against a precomputed eps(x_t, e_empty).

    ``cond`` has x's batch or 1 (broadcast). Returns m (B,), or M (a scalar) with ``batch``; with ``grad`` the
    call runs with autograd on, so the result can be differentiated (towards ``cond`` or ``x``)."""
    if cond.shape[0] != x.shape[0]:
        cond = cond.expand(x.shape[0], *cond.shape[1:])
    with torch.set_grad_enabled(grad):
        eps_cond = denoise(x, torch.as_tensor(t, device=x.device), cond)
        return (batch_magnitude if batch else magnitude)(eps_cond, eps_uncond)
