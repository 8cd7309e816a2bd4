"""Training the testbed models: the DDPM loss (Ho et al. 2020, Eq. 14) on the model's target, noise or
v (Salimans & Ho 2022; see ``memlib.testbed.model``), with classifier-free guidance dropout (Ho & Salimans 2022):
a fraction of captions is replaced by the empty prompt.

Seeded, with a progress bar, checkpointing every ``checkpoint_every`` steps and resuming from the last
checkpoint (weights, optimizer, RNG state, loss history and loss state) after an interruption.

Loss functions return per-sample losses (``Losses``: l_i, the mean of sample i's squared error, and the
timesteps t_i), so the training-time mitigations can act per sample through a ``sample_hook``:
- IET-AGC (Liu et al., ECCV 2024, Sec. 3.3): skip i when l_i < M[t_i] / r for a per-timestep loss bank M, and
  average the kept losses, L = sum_i m_i l_i / max(sum_i m_i, 1); IET-AGC+ counts the skips per sample.
- Wen et al. (ICLR 2024, Sec. 5): drop samples whose text-conditional magnitude is >= tau.
The hook's state (a bank, skip counts) lives in ``loss_state`` and is saved and restored with the checkpoint.
``rows`` trains on one shard of the data (IET's proxy models), ``device`` places model and batches.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import CheckpointError, load_train_state, load_weights, read_meta, save_checkpoint
from .config import Config, check_range
from .schedule import add_noise, sd_scheduler, training_target


@dataclass
class TrainConfig(Config):
    steps: int = 2800              # optimizer steps (about 0.65 s each on 2 CPU cores at batch 64)
    batch_size: int = 64
    lr: float = 1e-3               # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 100        # linear warm-up, then cosine decay to 10 % of lr
    cond_dropout: float = 0.1      # share of captions replaced by "" (enables CFG)
    grad_clip: float = 1.0
    checkpoint_every: int = 200    # steps between resumable checkpoints
    seed: int = 0

    def validate(self) -> None:
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_range("checkpoint_every", self.checkpoint_every, 1)


@dataclass
class Losses:
    """What a loss function returns for a batch of B samples."""
    loss: torch.Tensor                    # (B,) per-sample losses: the mean over each sample's elements
    t: torch.Tensor | None = None         # (B,) timesteps they were taken at (per-timestep loss banks)
    mean: torch.Tensor | None = None      # loss.mean() as the scalar loss always computed it: with no weights the
                                          # loop minimises this, so default training stays bit-identical
    info: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. x_t, the prediction (Wen's filter)


@dataclass
class Batch:
    """What a sample hook sees at each step, before the backward pass."""
    step: int
    rows: torch.Tensor                    # (B,) dataset rows of the batch
    losses: Losses                        # with their graph: detach before storing
    state: dict[str, torch.Tensor]        # the run's loss state; update it in place, it is checkpointed


# Returns per-sample weights (B,) (0 drops a sample; the loss is the weighted mean) or None (plain mean).
SampleHook = Callable[[Batch], Union[torch.Tensor, None]]
LossFn = Callable[[torch.Tensor, torch.Generator], Union[Losses, torch.Tensor]]
ExtraStep = Callable[[int, torch.Generator, dict], Union[torch.Tensor, None]]


def mse_losses(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor | None = None,
               info: dict[str, torch.Tensor] | None = None) -> Losses:
    """Per-sample mean squared errors; ``mean`` equals ``F.mse_loss(pred, target)`` bit for bit."""
    err = F.mse_loss(pred, target, reduction="none")
    return Losses(err.flatten(1).mean(1), t, err.mean(), info or {})


def contrastive_losses(logits: torch.Tensor) -> Losses:
    """Symmetric InfoNCE (Radford et al. 2021) per pair i: the mean of its image->text and text->image cross
    entropies. The other pairs stay in every row's softmax, so a weight drops a pair as a positive only."""
    target = torch.arange(len(logits), device=logits.device)
    per = (F.cross_entropy(logits, target, reduction="none")
           + F.cross_entropy(logits.T, target, reduction="none")) / 2
    return Losses(per, mean=(F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)


def reduce_losses(losses: Losses, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar to minimise: ``losses.mean`` (else loss.mean()) without weights; with weights w the weighted
    mean sum_i w_i l_i / sum_i w_i, which is 0 (with zero gradients) when every sample is dropped."""
    if weights is None:
        return losses.mean if losses.mean is not None else losses.loss.mean()
    w = weights.to(device=losses.loss.device, dtype=losses.loss.dtype).reshape(-1)
    if w.shape != losses.loss.shape:
        raise ValueError(f"sample hook returned weights of shape {tuple(w.shape)}, expected {tuple(losses.loss.shape)}")
    total = w.sum()
    return (w * losses.loss).sum() / torch.where(total > 0, total, torch.ones_like(total))


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def _check_rows(rows, n_rows: int) -> torch.Tensor:
    rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1).cpu()
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= n_rows:
        raise ValueError(f"rows must be a non-empty set of dataset rows in [0, {n_rows}); got {len(rows)} rows "
                         f"spanning [{rows.min() if len(rows) else '-'}, {rows.max() if len(rows) else '-'}]")
    return rows


def _restore(into: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    """Copy a checkpointed loss state into the caller's dict in place (a hook may hold its tensors)."""
    for k, v in saved.items():
        if k in into and torch.is_tensor(into[k]) and into[k].shape == v.shape:
            into[k].copy_(v)
        else:
            into[k] = v.to(into[k].device) if torch.is_tensor(into.get(k)) else v


def train_loop(model: torch.nn.Module, loss_fn: LossFn, n_rows: int, cfg: TrainConfig, folder: str | Path,
               meta: dict[str, Any], progress: bool = True, stop_at: int | None = None, *,
               rows: torch.Tensor | None = None, device: str | torch.device | None = None,
               sample_hook: SampleHook | None = None, loss_state: dict[str, torch.Tensor] | None = None,
               ship_loss_state: bool = False, part: str | None = None, new_round: bool = False,
               ship_dtype: torch.dtype | None = None, extra_step: ExtraStep | None = None) -> dict[str, Any]:
    """Resumable training loop: ``loss_fn(batch_rows, generator)`` returns ``Losses`` (or, as before, a scalar).

    Resumes from ``folder`` if it holds an unfinished run with the same ``meta["run"]`` (and rows); ``stop_at``
    ends early (for tests that interrupt and resume).
    - ``rows``: draw batches from these dataset rows only (a shard); recorded in the metadata.
    - ``device``: move the model there; the loss functions move their batches to the model's device. Random
      draws stay on the CPU generator, so a run is the same draw sequence on any device.
    - ``sample_hook(Batch) -> weights | None``: drop or reweight samples. The loop counts, per dataset row, the
      steps a sample got weight 0 in ``loss_state["skips"]``.
    - ``loss_state``: tensors a hook keeps (e.g. a per-timestep loss bank); saved in ``train_state.pt`` and
      restored into this dict on resume; ``ship_loss_state`` also writes them beside the weights.
    - ``part``: checkpoint only this submodule (e.g. 'unet' when the text encoder is frozen and shipped elsewhere).
    - ``ship_dtype``: store the final weights in this type (e.g. float16, to ship half the bytes); the
      intermediate checkpoints a run resumes from keep full precision.
    - ``extra_step(step, generator, loss_state) -> loss | None``: after each step, one more optimizer step on the
      scalar loss it returns (IET-AGC+'s augmented step on queued kept samples); None takes no extra step.
    - ``new_round``: resume as the next round of IET's proxy training: keep the weights now in ``model`` (the
      average broadcast after a round) and accept changed ``rows`` (IET-AGC+ moves rows between shards); the
      optimizer, RNG, loss state and history still come from the checkpoint. End each round with ``stop_at``.
    Returns the training state (``step``, ``history``, ``seconds``, and ``loss_state`` when one is kept).
    """
    folder = Path(folder)
    if device is not None:
        model.to(device)
    if rows is not None:
        rows = _check_rows(rows, n_rows)
        meta = dict(meta, rows={"n": len(rows), "sha256": hashlib.sha256(rows.numpy().tobytes()).hexdigest()})
    if sample_hook is not None and loss_state is None:
        loss_state = {}
    if sample_hook is not None:
        loss_state.setdefault("skips", torch.zeros(n_rows, dtype=torch.long))
    params = [p for p in model.parameters() if p.requires_grad]  # frozen parts (a pretrained encoder) stay put
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "history": [], "seconds": 0.0}
    if (folder / "meta.json").exists():
        old = read_meta(folder)
        if old.get("run") != meta.get("run") or (old.get("rows") != meta.get("rows") and not new_round):
            raise CheckpointError(f"{folder} holds a run with other settings (or rows); move it away or choose "
                                  f"another folder")
        if not new_round:
            load_weights(folder, model)
        saved = load_train_state(folder)
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["rng"])
            state = {"step": saved["step"], "history": saved["history"], "seconds": saved["seconds"]}
            if loss_state is not None:
                _restore(loss_state, saved.get("loss_state", {}))
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    model.train()
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc="training", unit="step")
    t0, sec0 = time.time(), state["seconds"]
    while state["step"] < end:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg)
        # the same draw as ever without rows; with rows, a uniform draw over the shard
        idx = torch.randint(n_rows, (cfg.batch_size,), generator=gen) if rows is None \
            else rows[torch.randint(len(rows), (cfg.batch_size,), generator=gen)]
        loss = _step_loss(loss_fn(idx, gen), idx, step, sample_hook, loss_state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if extra_step is not None:
            extra_loss = extra_step(step, gen, loss_state)
            if extra_loss is not None:
                opt.zero_grad(set_to_none=True)
                extra_loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
        state["step"] += 1
        state["history"].append(loss.item())
        bar.update(1)
        if state["step"] % 25 == 0:
            bar.set_postfix(loss=f"{sum(state['history'][-25:]) / 25:.4f}")
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == end:
            state["seconds"] = sec0 + time.time() - t0
            extra = {"optimizer": opt.state_dict(), "rng": gen.get_state(), **state}
            if loss_state is not None:
                extra["loss_state"] = {k: v.detach().cpu().clone() for k, v in loss_state.items()}
            # the loss curve (and a shipped loss state) go with the weights; train_state.pt stays local
            save_checkpoint(folder, model, dict(meta, step=state["step"], memlib_version=__version__),
                            extra_state=extra, part=part, loss_state=loss_state if ship_loss_state else None,
                            dtype=ship_dtype if state["step"] == cfg.steps else None,
                            json_files={"history.json": [round(v, 5) for v in state["history"]]})
    bar.close()
    model.eval()
    if loss_state is not None:
        state["loss_state"] = loss_state
    return state


def _step_loss(out, idx: torch.Tensor, step: int, hook: SampleHook | None,
               loss_state: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Reduce what ``loss_fn`` returned to the scalar to minimise, asking the sample hook for weights."""
    if isinstance(out, dict):
        out = Losses(**out)
    elif torch.is_tensor(out):
        if out.ndim == 0:  # an old-style scalar loss
            if hook is not None:
                raise TypeError("a sample_hook needs per-sample losses: make loss_fn return Losses (or a (B,) tensor)")
            return out
        out = Losses(out)
    weights = hook(Batch(step, idx, out, loss_state)) if hook is not None else None
    if weights is not None:
        dropped = (weights.detach().reshape(-1) == 0).long().cpu()
        loss_state["skips"].index_add_(0, idx.cpu(), dropped.to(loss_state["skips"].device))
    return reduce_losses(out, weights)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def text_to_image_loss(model, images: torch.Tensor, token_ids: torch.Tensor, empty_ids: torch.Tensor,
                       cond_dropout: float) -> Callable[[torch.Tensor, torch.Generator], Losses]:
    """Closure computing the CFG-dropout diffusion loss (target per ``model.cfg.prediction_type``) on rows
    ``idx`` of pre-tokenized data: per-sample losses, their timesteps, and x_t / token ids / prediction in
    ``info``. Random draws happen on the CPU in a fixed order; the batch then moves to the model's device."""
    sched = sd_scheduler("ddpm")
    abar = sched.alphas_cumprod.float()

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> Losses:
        x0, ids = images[idx], token_ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cond_dropout
        ids[drop] = empty_ids
        t = torch.randint(0, len(abar), (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        dev = _device(model)
        x0, ids, t, noise, a = (v.to(dev) for v in (x0, ids, t, noise, abar[t].view(-1, 1, 1, 1)))
        xt = add_noise(x0, noise, a)
        pred = model.raw(xt, t, model.encode(ids))
        return mse_losses(pred, training_target(x0, noise, a, model.cfg.prediction_type), t,
                          {"x_t": xt, "ids": ids, "pred": pred})

    return loss_fn
