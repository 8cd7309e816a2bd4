"""Training the testbed models: the DDPM loss (Ho et al. 2020, Eq. 14) on the model's target, noise or
v (Salimans & Ho 2022; see ``memlib.models``), with classifier-free guidance dropout (Ho & Salimans 2022):
a fraction of captions is replaced by the empty prompt.

Seeded, with a progress bar, checkpointing every ``checkpoint_every`` steps and resuming from the last
checkpoint (weights, optimizer, RNG state and loss history) after an interruption.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
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


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def train_loop(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                    n_rows: int, cfg: TrainConfig, folder: str | Path, meta: dict[str, Any],
                    progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Resumable training loop: ``loss_fn(batch_indices, generator)`` returns the scalar loss.

    Resumes from ``folder`` if it holds an unfinished run with the same ``meta``; ``stop_at`` ends early
    (for tests that interrupt and resume). Returns the training state (``step``, ``history``, ``seconds``).
    """
    folder = Path(folder)
    params = [p for p in model.parameters() if p.requires_grad]  # frozen parts (a pretrained encoder) stay put
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "history": [], "seconds": 0.0}
    if (folder / "meta.json").exists():
        old = read_meta(folder)
        if old.get("run") != meta.get("run"):
            raise CheckpointError(f"{folder} holds a run with other settings; move it away or choose another folder")
        load_weights(folder, model)
        saved = load_train_state(folder)
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["rng"])
            state = {"step": saved["step"], "history": saved["history"], "seconds": saved["seconds"]}
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    model.train()
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc="training", unit="step")
    t0, sec0 = time.time(), state["seconds"]
    while state["step"] < end:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg)
        idx = torch.randint(n_rows, (cfg.batch_size,), generator=gen)
        loss = loss_fn(idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        state["step"] += 1
        state["history"].append(loss.item())
        bar.update(1)
        if state["step"] % 25 == 0:
            bar.set_postfix(loss=f"{sum(state['history'][-25:]) / 25:.4f}")
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == end:
            state["seconds"] = sec0 + time.time() - t0
            save_checkpoint(folder, model, dict(meta, step=state["step"], memlib_version=__version__),
                            extra_state={"optimizer": opt.state_dict(), "rng": gen.get_state(), **state})
            # the loss curve ships with the weights; train_state.pt (optimizer, RNG) stays local
            (folder / "history.json").write_text(json.dumps([round(v, 5) for v in state["history"]]))
    bar.close()
    model.eval()
    return state


def text_to_image_loss(model, images: torch.Tensor, token_ids: torch.Tensor, empty_ids: torch.Tensor,
                       cond_dropout: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Closure computing the CFG-dropout diffusion loss (target per ``model.cfg.prediction_type``) on rows
    ``idx`` of pre-tokenized data."""
    sched = sd_scheduler("ddpm")
    abar = sched.alphas_cumprod.float()

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x0, ids = images[idx], token_ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cond_dropout
        ids[drop] = empty_ids
        t = torch.randint(0, len(abar), (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model.raw(xt, t, model.encode(ids))
        return torch.nn.functional.mse_loss(pred, training_target(x0, noise, a, model.cfg.prediction_type))

    return loss_fn
