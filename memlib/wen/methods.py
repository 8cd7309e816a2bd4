"""Wen et al.'s two mitigations (ICLR 2024, Sec. 4) as methods of the mitigation harness (``memlib.mitigate``):

- ``wen_pe`` (knob l_target, the joint first-step magnitude over the n noises): ``mitigate_pe``. Without a value it
  runs at notebook 03's operating point, ``PE_L_TARGET``.
- ``filter_method(ref, tau)``: the testbed trained from scratch with the magnitude filter at tau
  (``filter_train``); a training-time method, so it acts through another checkpoint. Registered as
  ``wen_filter`` for the embedded testbed (the shipped filtered checkpoints; another tau trains one first).
"""
from __future__ import annotations

import numpy as np
import torch

from ..backends.testbed import TestbedBackend
from ..mitigate.method import Context, Knob, Method, Plan
from ..mitigate.registry import register
from .mitigate_pe import optimize_prompt_embeddings

# Notebook 03's operating point (figures/03_mitigation/metrics.json, pe_operating_l_target): the largest l_target
# that halves pooled memorized replication on its development half. Notebook 03 places its sweep with
# ``joint_first_step`` and PE stops on ``joint_losses``, one norm over a prompt's n noises at the first sampling
# step, so the value means the same here at notebook 03's 4 generations and 25 steps; with fewer generations it is
# a looser target (the norm grows about as sqrt(n)).
PE_L_TARGET = 2.26
PE_L_TARGET_GENS, PE_L_TARGET_STEPS = 4, 25   # the generations per prompt and sampling steps it was chosen at
PE_KNOB = Knob("l_target", (4.0, 3.0, 2.5, 2.0, 1.5, 1.0), 0.0, 1000.0, default=PE_L_TARGET)
TAU_KNOB = Knob("tau", (4.67, 3.2, 2.56), 0.0, 1000.0)


def _pe(ctx: Context, l_target: float) -> Plan:
    res = optimize_prompt_embeddings(ctx.backend, ctx.prompts, ctx.gen_cfg, l_target)
    acted = res.iterations > 0
    # prompts that took no step keep their own encoding: their generation is the unmitigated one, bit for bit
    override = {p: res.embeddings[p] for p in np.flatnonzero(acted)}
    return Plan(list(ctx.prompts), cond_override=override, acted=acted, prep_seconds=res.seconds,
                prep_evals_per_image=res.evals_per_image,
                info={"iterations": res.iterations, "loss_initial": res.loss_initial,
                      "loss_last": res.loss_last, "converged": res.converged})


register("wen_pe", PE_KNOB, _pe, description="Wen et al.: prompt-embedding optimization at x_T")


def filter_method(ref, tau: float, base=None, progress: bool = False, device=None,
                  precision: torch.dtype = torch.float32) -> Method:
    """The filtered-training model at ``tau`` as a harness method (trained on first use unless shipped), run on
    ``device`` in ``precision``."""
    from .filter_train import train_filtered

    cache: dict = {}

    def build(ctx: Context, value: float) -> Plan:
        if "backend" not in cache:
            tb = train_filtered(ref, value, base=base, progress=progress, device=device)
            cache["backend"] = TestbedBackend(tb.model, tb, precision)
        return Plan(list(ctx.prompts), backend=cache["backend"], acted=np.ones(len(ctx.prompts), bool))

    return Method("wen_filter", TAU_KNOB, TAU_KNOB.check("wen_filter", tau), build, kind="training",
                  description="Wen et al.: training samples with magnitude >= tau dropped from the loss")


_FILTERED: dict = {}   # (testbed ref, tau, device, precision) -> the filtered model's backend, loaded once per process


def _filter_registry(ctx: Context, tau: float) -> Plan:
    from .filter_train import train_filtered

    ref = getattr(ctx.backend, "ref", None)
    if ref is None or getattr(ctx.backend, "testbed", None) is None:
        raise ValueError("wen_filter acts at training time: through the registry it runs on the embedded testbed "
                         "(its filtered checkpoints ship). For your model, retrain it with the filter "
                         "(memlib.wen.filter_train shows how on the testbed)")
    key = (repr(ref), float(tau), str(ctx.backend.device), ctx.backend.precision)
    if key not in _FILTERED:
        tb = train_filtered(ref, tau, base=ctx.backend.testbed, progress=ctx.progress, device=ctx.backend.device)
        _FILTERED[key] = TestbedBackend(tb.model, tb, ctx.backend.precision)
    return Plan(list(ctx.prompts), backend=_FILTERED[key], acted=np.ones(len(ctx.prompts), bool))


register("wen_filter", TAU_KNOB, _filter_registry, kind="training", scope="testbed",
         description="Wen et al.: the testbed retrained with samples of magnitude >= tau dropped from the loss")
