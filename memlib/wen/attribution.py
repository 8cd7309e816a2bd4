"""Explaining memorization: per-token significance (Wen et al., ICLR 2024, Sec. 3.2).

    SS(i) = 1/|S| sum_{t in S} || d L_t(e) / d e^i ||_2

with, as Wen's reference notebook computes it (``batch_loss=True``, notebook 02's headline), ONE l2 norm over the
whole n-image batch,

    L_t(e) = || stack_j ( eps(x_t^j, e) - eps(x_t^j, e_empty) ) ||_2,

or the mean of the per-image norms 1/n sum_j || eps(x_t^j, e) - eps(x_t^j, e_empty) ||_2 (``batch_loss=False``;
both from ``memlib.wen.magnitude``). e^i is row i of the text encoder's *output* embedding of the prompt (the
conditional branch); e_empty is held fixed (no gradient). The reference code swaps the two rows when it takes the
norm, which is harmless because the norm is symmetric; "fixing" it by differentiating the empty-prompt row
instead (reference issue #9) measures the wrong thing, so here the gradient provably flows to the conditional
embedding only. Wen's notebook takes S = all 50 sampling steps of 4 images. Every step's gradient is recorded
(``TokenSignificance.per_step``), so any window S = the first k steps can be read off afterwards.

The trajectory is ordinary CFG sampling; at each chosen step a hook re-runs the conditional branch with autograd
on. ``reference_trajectory=True`` instead reproduces the reference code's update on the attributed steps, where
the swapped rows also feed the guided estimate (see ``token_significance``).

``occlusion_significance`` is a gradient-free cross-check reported beside SS(i) (not Wen's method): how much
the first-step magnitude falls when token i is dropped from the prompt, from the same starting noise.

``integrated_significance`` is a second cross-check (not Wen's method): integrated gradients (Sundararajan,
Taly, Yan, ICML 2017, Eq. 1) of the first-step magnitude along the straight path from e_empty to e_p,

    IG(i) = sum_f (e_p - e_empty)_{i,f} * int_0^1 dL(e_empty + a (e_p - e_empty)) / de_{i,f} da,

which sums over all rows to L(e_p) - L(e_empty) = d(p) (completeness). Why: a local gradient is blind to a
token whose effect has saturated, i.e. when the magnitude has reached its plateau before a = 1. Notebook 02
measures how early on this path the magnitude saturates, for the prompts Wen's gradient ranks right and wrong.

``input_embedding_significance`` is a third (not Wen's method): the same first-step gradient norm, taken at the
text encoder's *input* token embeddings. The encoder's causal attention copies each token into every row after
it, the EOS/padding rows included, which Wen's chart drops; a gradient at output row i sees only what token i
does through its own row, one at the input sums every route (``memlib.embedding_rows`` measures the routes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..generation import GenerationConfig, noise_seed
from ..sampling import StepState, sample, seeded_noise
from .magnitude import model_magnitude


@dataclass
class TokenSignificance:
    prompt: str
    tokens: list[str]            # the prompt's tokens (no BOS/EOS/padding)
    significance: np.ndarray     # (n_tokens,) per token: Wen's mean gradient norm, or the cross-check's value
    magnitude: float             # the loss L_t (Wen: text-conditional norm), mean over the chosen steps
    per_step: np.ndarray | None = None   # (n_steps, n_tokens) gradient norms, chosen steps in sampling order
    per_step_magnitude: np.ndarray | None = None   # (n_steps,) L_t at those steps
    path: np.ndarray | None = None       # integrated gradients: (n_alpha,) magnitude along the path from e_empty
    all_rows_total: float | None = None  # integrated gradients summed over every row, EOS/padding too (~ magnitude)

    def over_first(self, k: int) -> "TokenSignificance":
        """The same gradients averaged over the first ``k`` of the chosen steps only (S = those steps)."""
        if self.per_step is None or not 1 <= k <= len(self.per_step):
            raise ValueError(f"need 1 <= k <= {0 if self.per_step is None else len(self.per_step)} recorded steps")
        mag = self.magnitude if self.per_step_magnitude is None else float(self.per_step_magnitude[:k].mean())
        return replace(self, significance=self.per_step[:k].mean(0), magnitude=mag)


def _check_prompt(prompt) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("token attribution needs a non-empty prompt")


def _first_step(backend, prompt: str, gen_cfg: GenerationConfig):
    """Detection's starting noise for ``prompt`` (one per generation), the first timestep, e_empty and its eps."""
    G = gen_cfg.n_gens
    x = seeded_noise(backend.sample_shape, [noise_seed(gen_cfg.seed, g, prompt) for g in range(G)], backend.device)
    sched = backend.scheduler(gen_cfg.scheduler)
    sched.set_timesteps(gen_cfg.num_steps)
    t = torch.as_tensor(sched.timesteps[0], device=x.device)
    with torch.no_grad():
        empty = backend.encode_prompts([""])
        eps_u = backend.eps(x, t, empty.expand(G, -1, -1))
    return x, t, empty, eps_u


class _GradHook:
    """At each chosen step: d L_t / d e for the prompt's embedding e (one row, broadcast over the n images, so its
    gradient sums theirs); with ``reference_trajectory`` also returns the reference code's swapped update."""

    def __init__(self, emb: torch.Tensor, steps: set[int], batch_loss: bool = False,
                 reference_trajectory: bool = False):
        self.emb, self.steps, self.batch_loss = emb, steps, batch_loss
        self.reference_trajectory, self.grads, self.norms = reference_trajectory, [], []

    def __call__(self, s: StepState):
        if s.i not in self.steps:
            return None
        with torch.enable_grad():
            e = self.emb.detach().clone().requires_grad_(True)
            m = model_magnitude(s.denoise, s.x.detach(), s.t, e, s.eps_uncond.detach(), grad=True,
                                batch=self.batch_loss)
            loss = m if self.batch_loss else m.mean()
            (grad,) = torch.autograd.grad(loss, e)
        self.grads.append(grad[0].norm(dim=-1).detach())   # (L,) per-token norm over features
        self.norms.append(loss.item())
        return reference_update(s.eps_cond, s.eps_uncond, s.guidance_scale) if self.reference_trajectory else None


def reference_update(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided estimate Wen's reference code steps with on an attributed step: its branches arrive swapped,
    so "uncond + s (text - uncond)" becomes eps_c + s (eps_u - eps_c) = eps_u + (1 - s)(eps_c - eps_u),
    i.e. classifier-free guidance with scale 1 - s: it points away from the prompt."""
    return eps_cond + scale * (eps_uncond - eps_cond)


def token_significance(backend, prompt: str, gen_cfg: GenerationConfig | None = None,
                       steps: list[int] | None = None, batch_loss: bool = False,
                       reference_trajectory: bool = False) -> TokenSignificance:
    """Per-token significance of ``prompt`` over ``gen_cfg.n_gens`` generations and ``steps`` (default all).

    L_t is the mean of the per-image magnitudes, or with ``batch_loss`` the reference notebook's one norm over
    the n-image batch (then ``magnitude`` is that norm too). Wen's exact setting: ``steps=None`` (all
    ``gen_cfg.num_steps``), ``batch_loss=True``, 4 generations.

    ``reference_trajectory`` reproduces what Wen's reference code (``get_text_cond_grad``) does on every
    attributed step: it stacks the prompt's embedding where the empty prompt's belongs and vice versa, and the
    same swapped branches feed the update, so the step is taken with ``reference_update``, guidance of scale
    1 - s that points *away* from the prompt. For the loss the swap is harmless (the norm is symmetric); for the
    trajectory it is not: after the first attributed step, x_t is no longer a state that ordinary sampling of
    the prompt visits (with S = all steps the whole run is anti-guided and does not move towards the memorized
    image), so every later gradient is taken at states a user's generation never reaches. Only the first
    step's gradient, taken at x_T, is the same either way. Off by default; notebook 02 reports it as a variant."""
    gen_cfg = gen_cfg or GenerationConfig()
    _check_prompt(prompt)
    steps = list(range(gen_cfg.num_steps)) if steps is None else list(steps)
    if not steps or min(steps) < 0 or max(steps) >= gen_cfg.num_steps:
        raise ValueError(f"steps must be a non-empty subset of 0..{gen_cfg.num_steps - 1}, got {steps}")
    tok = backend.tokenizer
    with torch.no_grad():
        emb, uncond = backend.encode_prompts([prompt]), backend.encode_prompts([""])
    hook = _GradHook(emb, set(steps), batch_loss, reference_trajectory)
    x_T = seeded_noise(backend.sample_shape, [noise_seed(gen_cfg.seed, g, prompt) for g in range(gen_cfg.n_gens)],
                       backend.device)
    sample(backend.eps, x_T, backend.scheduler(gen_cfg.scheduler), gen_cfg.num_steps, emb, uncond,
           gen_cfg.guidance_scale, [hook], stop_after=max(steps) + 1)
    n = tok.n_tokens(prompt)
    per_step = torch.stack(hook.grads)[:, 1:n + 1].cpu().numpy()   # drop BOS and EOS/padding
    return TokenSignificance(prompt, tok.token_strings(prompt)[:n], per_step.mean(0), float(np.mean(hook.norms)),
                             per_step, np.array(hook.norms))


def trigger_positions(tokenizer, prompt: str, trigger: str) -> list[int]:
    """Indices (into the prompt's tokens) of the trailing trigger word's BPE pieces."""
    if not trigger or not prompt.endswith(trigger):
        raise ValueError(f"prompt {prompt!r} does not end with trigger {trigger!r}")
    n_all = len(tokenizer.token_ids(prompt))
    n_base = len(tokenizer.token_ids(prompt[: -len(trigger)].rstrip()))
    return list(range(n_base, n_all))


def drop_token(tokenizer, prompt: str, position: int) -> str:
    """The prompt with its ``position``-th token removed (an edit a user could make)."""
    ids = tokenizer.token_ids(prompt)
    if not 0 <= position < len(ids):
        raise IndexError(f"position {position} outside the prompt's {len(ids)} tokens")
    return tokenizer.decode(ids[:position] + ids[position + 1:]).strip()


def occlusion_significance(backend, prompt: str, gen_cfg: GenerationConfig | None = None) -> TokenSignificance:
    """Per token: first-step magnitude of ``prompt`` minus that of ``prompt`` with the token dropped.

    Every variant starts from the original prompt's noise, so only the text differs. Dropping a token also
    shifts the positions of the tokens after it; read a large value as "the prompt needs this token", not as a
    gradient. ``magnitude`` is the original prompt's first-step magnitude (mean over generations)."""
    gen_cfg = gen_cfg or GenerationConfig()
    _check_prompt(prompt)
    tok, G = backend.tokenizer, gen_cfg.n_gens
    n = tok.n_tokens(prompt)
    variants = [prompt] + [drop_token(tok, prompt, i) for i in range(n)]
    x, t, _, eps_u = _first_step(backend, prompt, gen_cfg)
    with torch.no_grad():
        emb = backend.encode_prompts(variants).repeat_interleave(G, dim=0)
        d = model_magnitude(backend.eps, x.repeat(len(variants), 1, 1, 1), t, emb,
                            eps_u.repeat(len(variants), 1, 1, 1)).reshape(len(variants), G).mean(1)
    d = d.cpu().numpy()
    return TokenSignificance(prompt, tok.token_strings(prompt)[:n], d[0] - d[1:], float(d[0]))


def integrated_significance(backend, prompt: str, gen_cfg: GenerationConfig | None = None, n_alpha: int = 32,
                            alpha_batch: int = 8) -> TokenSignificance:
    """Integrated gradients of the first-step magnitude (mean over ``gen_cfg.n_gens`` generations) per token.

    The integral is a midpoint rule over ``n_alpha`` points, ``alpha_batch`` of them per model call. The noise is
    the one detection and ``token_significance`` use, so the three attributions see the same x_T.
    ``magnitude`` is d(p) at e_p itself; ``path`` is the magnitude at each midpoint (it shows saturation);
    ``significance`` is signed (a token can lower the magnitude) and, over all rows including EOS/padding, sums
    to ``magnitude`` up to the midpoint rule's error."""
    gen_cfg = gen_cfg or GenerationConfig()
    _check_prompt(prompt)
    if n_alpha < 1 or alpha_batch < 1:
        raise ValueError(f"n_alpha ({n_alpha}) and alpha_batch ({alpha_batch}) must be >= 1")
    tok, G = backend.tokenizer, gen_cfg.n_gens
    x, t, empty, eps_u = _first_step(backend, prompt, gen_cfg)
    with torch.no_grad():
        emb = backend.encode_prompts([prompt])
        full = model_magnitude(backend.eps, x, t, emb, eps_u).mean().item()
    delta = emb - empty
    alphas = (torch.arange(n_alpha, dtype=emb.dtype, device=emb.device) + 0.5) / n_alpha
    grad_sum, path = torch.zeros_like(emb[0]), []
    for chunk in alphas.split(alpha_batch):
        k = len(chunk)
        with torch.enable_grad():
            e = (empty + chunk.view(-1, 1, 1) * delta).detach().requires_grad_(True)       # (k, L, D)
            per_alpha = model_magnitude(backend.eps, x.repeat(k, 1, 1, 1), t, e.repeat_interleave(G, dim=0),
                                        eps_u.repeat(k, 1, 1, 1), grad=True).view(k, G).mean(1)   # L(e(a)) per a
            (grad,) = torch.autograd.grad(per_alpha.sum(), e)   # rows are independent, so one backward
        grad_sum += grad.sum(0)
        path += per_alpha.detach().cpu().tolist()
    ig = (delta[0] * grad_sum / n_alpha).sum(-1)                                          # (L,) signed
    n = tok.n_tokens(prompt)
    return TokenSignificance(prompt, tok.token_strings(prompt)[:n], ig[1:n + 1].cpu().numpy(), full,
                             path=np.array(path), all_rows_total=float(ig.sum()))


def input_embedding_significance(backend, prompt: str, gen_cfg: GenerationConfig | None = None) -> TokenSignificance:
    """Per token: ||dL/du^i||_2 at the first step, u^i the text encoder's input embedding of token i (before
    position embeddings and attention), L the first-step magnitude (mean over ``gen_cfg.n_gens`` generations).

    Needs ``backend.text_encoder``, a transformers text model (the testbed's and Stable Diffusion's are)."""
    gen_cfg = gen_cfg or GenerationConfig()
    _check_prompt(prompt)
    encoder = getattr(backend, "text_encoder", None)
    if encoder is None or not hasattr(encoder, "get_input_embeddings"):
        raise TypeError(f"backend {getattr(backend, 'name', type(backend).__name__)!r} has no transformers "
                        f"text_encoder; input-embedding gradients need one")
    tok, G = backend.tokenizer, gen_cfg.n_gens
    x, t, _, eps_u = _first_step(backend, prompt, gen_cfg)
    leaf = {}

    def make_leaf(_module, _inputs, out):   # the looked-up embeddings become the tensor we differentiate
        leaf["u"] = out.detach().requires_grad_(True)
        return leaf["u"]

    handle = encoder.get_input_embeddings().register_forward_hook(make_leaf)
    try:
        with torch.enable_grad():
            emb = backend.encode(tok([prompt]))
            loss = model_magnitude(backend.eps, x, t, emb, eps_u, grad=True).mean()
            (grad,) = torch.autograd.grad(loss, leaf["u"])
    finally:
        handle.remove()
    n = tok.n_tokens(prompt)
    return TokenSignificance(prompt, tok.token_strings(prompt)[:n], grad[0, 1:n + 1].norm(dim=-1).cpu().numpy(),
                             float(loss.detach()))
