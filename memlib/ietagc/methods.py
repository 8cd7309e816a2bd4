"""IET-AGC (Liu, Guan, Wu, Miao, ECCV 2024) and IET-AGC+ (Guan et al., arXiv 2502.09434): the public training
entry points. Both are training-time methods, so nothing here is registered with the mitigation harness (which
acts while sampling); a model trained with them samples like any digits DDPM.

- ``AGCHook``: anti-gradient control (Sec. 3.3), a ``train_loop`` sample hook that skips sample i when
  r l_i < M[t_i], the per-timestep loss bank.
- ``taa_strength``: threshold-aware augmentation's strength exp(-kappa d_i) from the distance to the skip threshold.
- ``augment_magnitude``: a TAA batch's RandAugment magnitude, floor(mean strength x A).
- ``redistribute``: memory-sample redistribution (MSR), each shard passing its most-skipped rows to the next.
- ``rand_augment``: the seeded RandAugment that TAA applies to [-1, 1] digits.
- ``TAAStep``: TAA's extra augmented step on the kept samples, an ``extra_step`` for ``train_loop``.
- ``IETConfig``: iterative ensemble training's settings (K shards, R rounds, AGC / MSR / TAA switches).
- ``train_iet``: IET (Sec. 3.2) on ``torch.distributed``, K proxies averaged every round; resumable.
- ``digits_trainer``: ``(make_model, train_proxy)`` for ``train_iet`` on the digits DDPM, with TAA when asked.
- ``train_run``: train (or resume) one run spec in this process; each ``torchrun`` rank runs it.
- ``RunPlan``: notebook 06's runs (baseline, IET, +AGC, +MSR, full, long, control) at equal probe sample visits.
- ``launch``: train a planned run in its folder (``torchrun`` with ``ranks`` processes) unless it has finished.
- ``run_folder``: where a run spec lives (``checkpoints/ietagc-<name>-<digest>``).
"""
from __future__ import annotations

from .agc import AGCHook, augment_magnitude, redistribute, taa_strength
from .iet import IETConfig, train_iet
from .launch import digits_trainer
from .launch import run as train_run
from .runs import RunPlan, launch, run_folder
from .taa import TAAStep, rand_augment

__all__ = ["AGCHook", "taa_strength", "augment_magnitude", "redistribute", "rand_augment", "TAAStep", "IETConfig",
           "train_iet", "digits_trainer", "train_run", "RunPlan", "launch", "run_folder"]
