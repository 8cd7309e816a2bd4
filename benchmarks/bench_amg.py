"""Cost of AMG (Chen, Liu, Xu, CVPR 2024) against plain CFG per image on this machine; writes
benchmarks/results/amg-<device>.json.

    .venv/bin/python benchmarks/bench_amg.py [--repeats 3] [--prompts 32]

AMG runs at notebook 04's Main setting (c3, schedule and lambda_t read from figures/04_amg/metrics.json) on the
shipped testbed, 25 DDIM steps as in notebooks 03-04, on the first memorized and held-out test prompts (half
each): the memorized ones make the switch fire, so this is AMG's cost where it acts. Model evaluations are
counted by the sampler (images through the UNet per generated image); seconds are the median of the repeats and
include the nearest-neighbour search at every step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    a = ap.parse_args()
    from memlib.amg.guidance import AMGSettings
    from memlib.amg.methods import AMGSetup, amg_method
    from memlib.amg.threshold import Threshold
    from memlib.backends import make_backend
    from memlib.generation import GenerationConfig, generate
    from memlib.mitigate.evalset import evaluation_prompts
    from memlib.mitigate.method import Context
    from memlib.mitigate.similarity import SimilarityIndex
    from memlib.paths import repo_root
    from memlib.provenance import device_info

    m = json.loads((repo_root() / "figures" / "04_amg" / "metrics.json").read_text())["metrics"]
    backend = make_backend("testbed", progress=False)
    data = backend.testbed.data
    test = evaluation_prompts(data, "test")
    mem = [p.text for p in test if p.memorized][: a.prompts // 2]
    held = [p.text for p in test if p.group == "heldout"][: a.prompts - len(mem)]
    prompts = mem + held
    cfg = GenerationConfig(num_steps=25, n_gens=1, batch_size=128)
    th = Threshold(**m["calibration"]["threshold"])
    settings = replace(AMGSettings(), schedule=m["main_schedule"])
    method = amg_method(AMGSetup(SimilarityIndex(data.images), th, settings, data.captions), m["main_c3"])

    def run(with_amg: bool) -> tuple[float, float]:
        plan = method.apply(Context(backend, prompts, cfg)) if with_amg else None
        t0 = time.perf_counter()
        g = generate(backend, prompts, cfg, progress=False, extra_hooks=plan.extra_hooks if plan else None)
        return time.perf_counter() - t0, g.model_evals_per_image

    out = {"device": device_info(), "torch": torch.__version__, "prompts": len(prompts), "memorized": len(mem),
           "num_steps": cfg.num_steps, "main_c3": m["main_c3"], "schedule": m["main_schedule"]}
    for name, flag in (("cfg", False), ("amg", True)):
        run(flag)   # warm-up
        runs = [run(flag) for _ in range(a.repeats)]
        out[f"{name}_seconds_per_image"] = statistics.median(r[0] for r in runs) / len(prompts)
        out[f"{name}_evals_per_image"] = runs[0][1]
    out["seconds_ratio"] = out["amg_seconds_per_image"] / out["cfg_seconds_per_image"]
    out["evals_ratio"] = out["amg_evals_per_image"] / out["cfg_evals_per_image"]
    path = Path(__file__).parent / "results" / f"amg-{out['device'].replace(':', '_')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
