"""AMG (Chen, Liu, Xu, CVPR 2024) as a method of the mitigation harness (``memlib.mitigate``), and what a user
needs to run it on their own model.

``amg_method(setup, c3)`` wraps the guidance hook (``guidance.AMGGuidance``) for the harness: the knob is c3, the
dissimilarity scale; the rest (terms, gating mode, y_N rule, threshold) comes from an ``AMGSetup`` and is part of
the cache key. The plan records, per prompt, generation and step, sigma_t, lambda_t, whether the switch fired and
each term's weight, and marks a prompt as acted on when any term acted in any of its generations.
``register``ed as ``amg`` for the embedded testbed: notebook 04's AMG Main, one definition for both. Its settings
are ``main_settings()`` (the notebook's Main row builds from the same function), its index and captions the
testbed's training set, its lambda_t calibrated on the testbed's held-out dev prompts as the notebook calibrates
(``MAIN_CALIBRATION``, ``MAIN_PERCENTILE``: the notebook's parameters default to them), and its c3 without a value
is the one the notebook chose on its development half (``MAIN_C3``).

On another model:

- ``AMGSettings``: c1, c2, c3, the terms, the gating mode, the y_N rule and the similarity (Eqs. 13-17).
- ``AMGGuidance``: the sampler hook that adds the switched terms at each step (Eqs. 10, 13-17); pass it through
  ``extra_hooks`` of ``memlib.generation.generate``.
- ``Threshold``: lambda_t, time-varying ``a + (b - a) exp(-c t)``, constant or always on.
- ``sigma_traces``: sigma_t along plain-CFG trajectories of your prompts (what the calibration fits).
- ``calibrate``: lambda_t fitted to a percentile of held-out sigma_t per step (returns a ``Calibration``).
- ``AMGSetup`` + ``amg_method``: the same guidance as a harness method over your training images and captions;
  ``testbed_setup(backend, similarity='pixel' | 'descriptor', ref=...)`` builds it for the embedded testbed, with
  sigma_t on pixels (the registry's ``amg``) or on the testbed copy detector's descriptors (Eq. 9's SSCD).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..generation import GenerationConfig
from ..mitigate.method import Context, Knob, Method, Plan
from ..mitigate.registry import register
from ..mitigate.similarity import SimilarityIndex
from .calibrate import Calibration, calibrate, calibrate_testbed, sigma_traces
from .guidance import TRACES, AMGGuidance, AMGSettings
from .threshold import Threshold

__all__ = ["AMGSettings", "AMGGuidance", "Threshold", "sigma_traces", "calibrate", "Calibration", "AMGSetup",
           "amg_method", "testbed_setup", "main_settings", "SIMILARITIES", "C3_KNOB", "MAIN_C3", "MAIN_SCHEDULE",
           "MAIN_CALIBRATION", "MAIN_PERCENTILE"]

# AMG Main on the testbed. The G_sim schedule and c3 are what notebook 04 chose on its development half
# (figures/04_amg/metrics.json: main_schedule, main_c3); tests/test_registry_defaults.py holds them to the committed
# run. c1, c2 and the other settings are AMGSettings' defaults (why: ``guidance.AMGSettings``).
MAIN_SCHEDULE = "code"
MAIN_C3 = 300.0
# lambda_t: fitted to this percentile of sigma_t over these plain-CFG generations of the held-out dev prompts
MAIN_CALIBRATION = GenerationConfig(num_steps=25, guidance_scale=3.0, n_gens=8, batch_size=128, seed=0)
MAIN_PERCENTILE = 100.0

C3_KNOB = Knob("c3", (10.0, 30.0, 100.0, 300.0, 1000.0), 0.0, 1e6, none_value=0.0, default=MAIN_C3)


def main_settings(schedule: str = MAIN_SCHEDULE, c3: float = MAIN_C3, **changes) -> AMGSettings:
    """AMG Main's settings: every term, paper gating, n0's caption as y_N, c1 and c2 at their defaults, G_sim on
    ``schedule`` at ``c3``; ``changes`` override any field (the notebook's c1, c2 parameters, an ablation)."""
    return AMGSettings(schedule=schedule, c3=c3, **changes)


SIMILARITIES = ("pixel", "descriptor")


@dataclass
class AMGSetup:
    """What AMG needs besides the model: the training set it guards (index and captions) and the switch.
    ``similarity`` names what sigma_t compares: 'pixel' (the index holds images: NCC or -nL2) or 'descriptor'
    (the index holds the copy detector's descriptors of the training images and ``to_pixels`` is the descriptor
    network: Eq. 9's SSCD similarity, ``memlib.amg.descriptor_sigma``)."""
    index: SimilarityIndex
    threshold: Threshold
    settings: AMGSettings = AMGSettings()
    captions: list[str] | None = None
    to_pixels: Callable | None = None          # latent models: decoder to the index's pixel space
    similarity: str = "pixel"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"AMG similarity {self.similarity!r}: choose one of {SIMILARITIES}")

    def params(self) -> dict:
        return {"settings": self.settings.to_dict(), "threshold": self.threshold.to_dict(),
                "index": [len(self.index), float(self.index.x.sum())], "similarity": self.similarity}


def _build(setup: AMGSetup):
    def build(ctx: Context, c3: float) -> Plan:
        settings = replace(setup.settings, c3=c3)
        P, G, S = len(ctx.prompts), ctx.gen_cfg.n_gens, ctx.gen_cfg.num_steps
        info = {f"amg_{k}": np.full((P, G, S), np.nan, np.float32) for k in TRACES}
        record = {"_rows": P * G, **{k: info[f"amg_{k}"].reshape(P * G, S) for k in TRACES}}
        acted = np.zeros(P, bool)

        def hooks(rows):
            hook = AMGGuidance(settings, setup.index, setup.threshold, setup.captions, ctx.backend.encode_prompts,
                               setup.to_pixels, record, rows)

            def step(state):   # marks the prompts whose generation the guidance changed
                out = hook(state)
                if out is not None:
                    i = state.i
                    w = np.stack([record[k][rows, i] for k in ("spe", "dup", "sim")], 1)
                    acted[np.asarray(rows)[(w > 0).any(1)] // G] = True
                return out
            return [step]

        return Plan(list(ctx.prompts), extra_hooks=hooks, acted=acted, info=info)
    return build


def amg_method(setup: AMGSetup, c3: float | None = None, name: str = "amg", description: str = "") -> Method:
    """AMG with ``setup`` at dissimilarity scale ``c3`` (default: the setup's)."""
    value = C3_KNOB.check(name, setup.settings.c3 if c3 is None else c3)
    return Method(name, C3_KNOB, value, _build(setup), description=description or
                  f"AMG ({setup.settings.mode} gating, terms {'+'.join(setup.settings.terms)}, "
                  f"{setup.similarity} sigma)",
                  params=setup.params())


def testbed_setup(backend, settings: AMGSettings | None = None, threshold: Threshold | None = None,
                  similarity: str = "pixel", ref=None) -> AMGSetup:
    """The testbed's training set as AMG's index, with Main's settings and threshold (``MAIN_CALIBRATION`` on its
    held-out dev prompts, on the same sigma) unless given. ``similarity='descriptor'`` compares descriptors of the
    copy detector of testbed ``ref`` (a ``TestbedRef``; ``memlib.amg.descriptor_sigma``) instead of pixels."""
    tb = getattr(backend, "testbed", None)
    if tb is None:
        raise ValueError("AMG needs the training images it guards; through the registry it runs on the embedded "
                         "testbed. For another model build an AMGSetup with your images (memlib.amg.amg_method)")
    if similarity not in SIMILARITIES:
        raise ValueError(f"AMG similarity {similarity!r}: choose one of {SIMILARITIES}")
    settings = settings or main_settings()
    if similarity == "pixel":
        if threshold is None:
            threshold = calibrate_testbed(backend, MAIN_CALIBRATION, MAIN_PERCENTILE).threshold
        return AMGSetup(SimilarityIndex(tb.data.images), threshold, settings, tb.data.captions)
    from .descriptor_sigma import descriptor_calibration, descriptor_index, testbed_descriptor

    if ref is None:
        raise ValueError("AMG's descriptor similarity needs the testbed's copy detector: pass ref=TestbedRef(...) of "
                         "the testbed the backend runs")
    if settings.similarity != "ncc":
        raise ValueError(f"AMG's descriptor similarity is a cosine: give AMGSettings(similarity='ncc'), not "
                         f"{settings.similarity!r}")
    detector = testbed_descriptor(ref, device=backend.device)
    if threshold is None:
        threshold = descriptor_calibration(backend, detector, MAIN_CALIBRATION, MAIN_PERCENTILE).threshold
    index, net = descriptor_index(detector, tb.data.images)
    return AMGSetup(index, threshold, settings, tb.data.captions, to_pixels=net, similarity="descriptor")


def _registry_build(ctx: Context, c3: float) -> Plan:
    return _build(testbed_setup(ctx.backend))(ctx, c3)


register("amg", C3_KNOB, _registry_build, scope="testbed", description="AMG Main (notebook 04): despecification, "
         "deduplication and dissimilarity guidance, switched per step by similarity to the nearest training image "
         "(testbed)")
