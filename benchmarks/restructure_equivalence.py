"""Issue 21's check that the restructure changed no arithmetic: notebook 00's evaluation (16 prompts per group,
4 generations, 50 steps, one thread) run by the old code (b094ee5) and the new, compared array by array.

    git worktree add /tmp/oldref b094ee5
    (cd /tmp/oldref && python /path/to/benchmarks/restructure_equivalence.py run /tmp/old.npz)
    python benchmarks/restructure_equivalence.py run /tmp/new.npz
    python benchmarks/restructure_equivalence.py compare /tmp/old.npz /tmp/new.npz
"""
import json
import sys
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "restructure_equivalence.json"


def run(out: str) -> None:
    import torch

    torch.set_num_threads(1)   # one thread: the reduction order is fixed
    from memlib.generation import GenerationConfig
    try:                       # the new layout
        from memlib.testbed.build import TestbedRef
        from memlib.testbed.evaluate import evaluate_testbed
        ref = TestbedRef()
        tb = ref.load(progress=False)
        clip = ref.load_clip(tb, progress=False)
    except ImportError:        # the layout before the restructure
        from memlib.testbed import TestbedNotebookConfig, load_testbed
        from memlib.testbed_eval import evaluate_testbed
        tb, clip = load_testbed(TestbedNotebookConfig(), progress=False)
    cfg = GenerationConfig(num_steps=50, guidance_scale=3.0, n_gens=4, batch_size=128, seed=0)
    ev = evaluate_testbed(tb, clip, cfg, max_per_group=16, progress=False)
    np.savez(out, images=ev.generation.images.numpy(), text_norm=ev.generation.text_norm, ratio=ev.ratio,
             clip=ev.clip_score)


def compare(old: str, new: str) -> None:
    a, b = np.load(old), np.load(new)
    res = {k: {"shape": list(a[k].shape), "bit_identical": bool(np.array_equal(a[k], b[k])),
               "max_abs_difference": float(np.abs(a[k] - b[k]).max())} for k in a.files}
    RESULT.write_text(json.dumps({"old": "b094ee5", "threads": 1, "prompts_per_group": 16, "arrays": res},
                                 indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    {"run": run, "compare": compare}[sys.argv[1]](*sys.argv[2:])
