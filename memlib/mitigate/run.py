"""``run_method``: one method at one knob value on the evaluation prompts, with fixed seeds, cached and resumable.

Generations are computed in chunks of prompts; each chunk is cached on disk (``memlib.cache``) under the
method, its knob value, the weights' content hash (of the checkpoint a training-time method brings), the prompts,
the generation settings and the memlib code, so an interrupted sweep resumes at the last finished chunk and a
changed checkpoint or code recomputes. Scoring (``columns.Evaluator``) runs on the cached images.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import cached_arrays, weights_fingerprint
from ..device import compute_tag
from ..generation import GenerationConfig, generate
from .columns import Evaluator, MethodRow
from .evalset import EvalPrompt
from .method import Context, Knob, Method, Plan


@dataclass
class MethodRun:
    row: MethodRow
    images: torch.Tensor          # (P, G, C, H, W) in [0, 1]
    text_norm: np.ndarray         # (P, G, steps) ||eps(x_t, e) - eps(x_t, e_empty)|| with the method's e
    info: dict[str, np.ndarray]   # per-prompt extras (acted, truncated, iterations, ...)


def _generate_chunk(backend, method: Method, texts: list[str], gen_cfg: GenerationConfig) -> dict[str, np.ndarray]:
    t0 = time.time()
    ctx = Context(backend, texts, gen_cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exceed the text encoder.*")  # recorded as 'truncated'
        plan = method.apply(ctx)
        prep = time.time() - t0
        gen = generate(plan.backend or backend, plan.prompts, plan.gen_cfg or gen_cfg, progress=False,
                       noise_keys=plan.noise_keys, cond_override=plan.cond_override, extra_hooks=plan.extra_hooks,
                       branches=plan.branches)
    n_img = len(texts) * gen_cfg.n_gens
    out = {"images": gen.images.numpy().astype(np.float32), "text_norm": gen.text_norm.astype(np.float32),
           "acted": np.asarray(plan.acted, bool),
           "seconds": np.float64(prep + gen.seconds),                              # the chunk's total
           "evals": np.float64((plan.prep_evals_per_image + gen.model_evals_per_image) * n_img)}   # total
    out.update({f"info_{k}": np.asarray(v) for k, v in plan.info.items()})
    return out


def run_method(backend, method: Method, prompts: list[EvalPrompt], evaluator: Evaluator,
               gen_cfg: GenerationConfig | None = None, chunk: int = 48, cache: str = "mitigate",
               progress: bool = True) -> MethodRun:
    """Generate ``gen_cfg.n_gens`` images per prompt under ``method`` and score them (``MethodRow``)."""
    gen_cfg = gen_cfg or GenerationConfig()
    if not prompts:
        raise ValueError("run_method needs at least one evaluation prompt")
    if chunk < 1:
        raise ValueError(f"chunk = {chunk}: give a positive number of prompts per cached chunk")
    model = backend
    if method.kind == "training":   # the method brings its own checkpoint: key the cache on its weights
        model = method.apply(Context(backend, [prompts[0].text], gen_cfg)).backend or backend
    weights = getattr(model, "_memlib_weights_sha256", None) or weights_fingerprint(model)
    try:   # a backend's weights never change in place: hash them once per backend object
        model._memlib_weights_sha256 = weights
    except AttributeError:
        pass
    texts = [p.text for p in prompts]
    parts = []
    starts = range(0, len(texts), chunk)
    for s in tqdm(starts, disable=not progress, desc=method.label, unit="chunk", leave=False):
        sub = texts[s:s + chunk]
        key = {"method": method.key(), "weights": weights, "compute": compute_tag(model), "prompts": sub,
               "gen": gen_cfg.to_dict()}
        parts.append(cached_arrays(cache, key, lambda: _generate_chunk(backend, method, sub, gen_cfg)))
    cat = {k: np.concatenate([p[k] for p in parts]) if parts[0][k].ndim else np.array([p[k] for p in parts])
           for k in parts[0]}
    n_img = len(texts) * gen_cfg.n_gens
    images = torch.from_numpy(cat["images"])
    info = {k.removeprefix("info_"): v for k, v in cat.items() if k.startswith("info_")}
    info["acted"] = cat["acted"]
    row = evaluator.score(prompts, images, method=method.name, knob=method.knob.name, value=method.value,
                          seconds_per_image=float(cat["seconds"].sum()) / n_img,
                          evals_per_image=float(cat["evals"].sum()) / n_img, acted=cat["acted"],
                          truncated=info.get("truncated"), seed=gen_cfg.seed,
                          extra={k: float(np.mean(v)) for k, v in info.items() if k not in ("acted", "truncated")})
    return MethodRun(row, images, cat["text_norm"], info)


def content_reference_method(prompts: list[EvalPrompt]) -> Method:
    """Plain CFG on each prompt's content caption (no trigger, no style word), with the original prompt's noise:
    how often the nearest training image is the planted one by chance, for an image of the same content."""
    content = {p.text: p.content for p in prompts}

    def build(ctx: Context, value) -> Plan:
        return Plan([content[t] for t in ctx.prompts], noise_keys=list(ctx.prompts),
                    acted=np.ones(len(ctx.prompts), bool))

    return Method("content_caption", Knob("none", (0,), 0, 0, integer=True, none_value=0), 0, build,
                  description="reference: plain CFG on the content caption alone (the chance level of "
                              "nearest-is-planted)", params={"rewrite": "content caption"})


def run_content_reference(backend, prompts: list[EvalPrompt], evaluator: Evaluator,
                          gen_cfg: GenerationConfig | None = None, chunk: int = 48, cache: str = "mitigate",
                          progress: bool = True) -> MethodRun:
    """The content-caption reference row on the memorized ``prompts`` (``content_reference_method``)."""
    memorized = [p for p in prompts if p.memorized]
    return run_method(backend, content_reference_method(memorized), memorized, evaluator, gen_cfg, chunk, cache,
                      progress)


def open_testbed(ref, cfg):
    """(testbed, backend, evaluator) of testbed ``ref`` on ``cfg``'s device and precision (``cfg.compute()``),
    scored with ``cfg.seed`` and ``cfg.progress``: what every notebook's further-testbed section runs on."""
    from ..backends.testbed import TestbedBackend

    cx = cfg.compute()
    tb = ref.load(progress=cfg.progress, device=cx.device)
    clip = ref.load_clip(tb, progress=cfg.progress, device=cx.device)
    evaluator = Evaluator.for_testbed(ref, tb, clip, seed=cfg.seed, progress=cfg.progress, device=cx.device)
    return tb, TestbedBackend(tb.model, tb, cx.dtype), evaluator
