"""Speed of the testbed's hot paths on this machine; writes benchmarks/results/testbed-<device>.json.

    .venv/bin/python benchmarks/bench_testbed.py [--repeats 3]

Measures: training step time (batch 64), DDIM sampling throughput (batch 128, 50 steps, CFG), first-step
detection throughput (prompts/s, one batched model call per batch) and nearest-neighbour queries.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from memlib.backends import make_backend
    from memlib.generation import GenerationConfig, generate
    from memlib.metrics import ReplicationIndex
    from memlib.provenance import device_info
    from memlib.train import text_to_image_loss

    backend = make_backend("testbed", progress=False)   # the shipped testbed
    tb, data = backend.testbed, backend.testbed.data
    prompts = [p.text for p in data.prompts][:128]
    tok = tb.model.tokenizer
    loss_fn = text_to_image_loss(tb.model, data.images, tok(data.captions), tok([""])[0], 0.1)
    gen = torch.Generator().manual_seed(0)

    def train_step():
        loss_fn(torch.randint(len(data), (64,), generator=gen), gen).mean.backward()
        tb.model.zero_grad(set_to_none=True)

    out = {"device": device_info(), "torch": torch.__version__}
    out["train_step_batch64_s"] = timeit(train_step, a.repeats)
    cfg = GenerationConfig(n_gens=1, batch_size=128)
    sec = timeit(lambda: generate(backend, prompts, cfg, progress=False), a.repeats)
    out["ddim50_cfg_images_per_s"] = len(prompts) / sec
    sec = timeit(lambda: generate(backend, prompts, cfg, stop_after=1, progress=False, keep_images=False), a.repeats)
    out["first_step_detection_prompts_per_s"] = len(prompts) / sec
    index = ReplicationIndex(data.images, data.cluster)
    q = data.images[:1024]
    out["nn_query_1024_s"] = timeit(lambda: index.query(q), a.repeats)
    path = Path(__file__).parent / "results" / f"testbed-{out['device'].replace(':', '_')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
