"""The fine-tuning analogue of IET-AGC+'s headline (Guan et al., arXiv 2502.09434: memorization score −46.7 % after
fine-tuning Stable Diffusion with IET-AGC+ against plain fine-tuning at equal sample visits).

A shipped text-to-image testbed (``base``) is fine-tuned on another testbed's training data (``data``: other
planted duplicates, other held-out combinations), once plainly and once through K proxies on disjoint shards
(IET, averaged every round, with AGC's loss-threshold skipping and MSR's redistribution), at equal sample visits.
Both start from the same weights; the text encoder stays frozen, as in the papers' Stable Diffusion runs, so only
the UNet trains and ships. TAA is left out: its augmentation is defined on images alone, while every fine-tuning
row here is an (image, caption) pair whose caption would no longer describe an augmented image.

A run is an ordinary IET-AGC+ run folder (``runs.launch``: resumable; IET under torchrun with one process per
rank); its spec names the two testbeds and the schedule, never the device.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import save_checkpoint
from ..testbed.build import TestbedRef
from ..train import TrainConfig, text_to_image_loss, train_loop
from .iet import IETConfig, last_round, train_iet


def finetune_specs(base: TestbedRef, data: TestbedRef, steps: int, batch_size: int, lr: float, shards: int,
                   rounds: int, seed: int) -> dict[str, dict]:
    """{'ft-plain-s<seed>': plain fine-tuning, 'ft-ietagc-s<seed>': IET+AGC+MSR} at ``steps`` x ``batch_size``
    sample visits each."""
    if steps % (shards * rounds):
        raise ValueError(f"steps = {steps} must split evenly into shards x rounds = {shards * rounds} proxy rounds "
                         f"(equal sample visits)")
    common = {"finetune": {"base": base.to_dict(), "data": data.to_dict()}}
    warmup = max(1, min(100, steps // 30))
    per = steps // (shards * rounds)
    return {
        f"ft-plain-s{seed}": {**common, "train": {"steps": steps, "batch_size": batch_size, "lr": lr,
                                                  "warmup_steps": warmup, "seed": seed}},
        f"ft-ietagc-s{seed}": {**common, "iet": {"shards": shards, "rounds": rounds, "steps_per_round": per,
                                                 "batch_size": batch_size, "lr": lr,
                                                 "warmup_steps": max(1, min(100, per * rounds // 30)),
                                                 "seed": seed, "agc": True, "msr": True}},
    }


def _setup(spec: dict, device):
    """(base model, fine-tuning data, its token ids, the empty prompt's ids) for ``spec``."""
    base = TestbedRef(**spec["finetune"]["base"]).load(progress=False)
    data = TestbedRef(**spec["finetune"]["data"]).load(progress=False).data
    model = base.model.to(device or "cpu")
    tok = model.tokenizer
    return model, data, tok(data.captions), tok([""])[0]


def _ship(folder: Path, model, weights: dict, spec: dict) -> None:
    model.load_state_dict(weights)
    save_checkpoint(folder / "final", model, {"kind": "ietagc-finetune", "run": spec}, part="unet",
                    dtype=torch.float16)


def run_finetune(spec: dict, folder: str | Path, stop_after_round: int | None = None, device=None) -> dict:
    """Train (or resume) the fine-tuning run ``spec`` (``finetune_specs``) in ``folder``; its final UNet goes to
    ``folder/final``. Returns the final weights."""
    folder = Path(folder)
    model, data, ids, empty = _setup(spec, device)
    cond_dropout = TrainConfig().cond_dropout
    meta = {"kind": "ietagc-finetune", "run": spec}
    if "train" in spec:                           # plain fine-tuning: one model on every row
        cfg = TrainConfig(**spec["train"], checkpoint_every=min(200, spec["train"]["steps"]))
        loss_fn = text_to_image_loss(model, data.images, ids, empty, cond_dropout)
        train_loop(model, loss_fn, len(data), cfg, folder / "train", meta, progress=True, part="unet",
                   device=device)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _ship(folder, model, weights, spec)
        return weights
    cfg = IETConfig(**spec["iet"])
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def make_model():
        proxy = copy.deepcopy(model)
        proxy.load_state_dict(start)
        return proxy

    def train_proxy(proxy, rows, train_cfg, proxy_folder, stop_at, hook, new_round):
        loss_fn = text_to_image_loss(proxy, data.images, ids, empty, cond_dropout)
        return train_loop(proxy, loss_fn, len(data), train_cfg, proxy_folder, meta, progress=False,
                          stop_at=stop_at, rows=rows, sample_hook=hook, new_round=new_round, part="unet",
                          device=device)

    weights = train_iet(cfg, make_model, train_proxy, len(data), folder, stop_after_round)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if last_round(folder)[0] == cfg.rounds - 1 and rank == 0:
        _ship(folder, model, weights, spec)
    return weights
