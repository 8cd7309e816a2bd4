"""IET training throughput with 1 and 2 ranks on this machine (Liu et al., ECCV 2024): sample visits per second of
a short IET-AGC+ run (the full method: AGC, MSR, TAA) on the digits, launched by torchrun with gloo on CPU (NCCL on
a GPU). Each rank gets an equal share of the cores. Writes benchmarks/results/ietagc_ranks.json.

    .venv/bin/python benchmarks/ietagc_ranks.py [--rounds 2 --steps-per-round 40]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memlib.ietagc.runs import RunPlan
from memlib.paths import repo_root
from memlib.provenance import device_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps-per-round", type=int, default=40)
    ap.add_argument("--ranks", default="1,2")
    args = ap.parse_args()
    plan = RunPlan(shards=4, rounds=args.rounds, steps=4 * args.rounds * args.steps_per_round)
    spec = plan.specs()[f"full-s{plan.seeds[0]}"]
    spec["probe"] = {"n_samples": 0}                 # training only
    out = {"device": device_info(), "spec": spec, "runs": {}}
    for ranks in [int(r) for r in args.ranks.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "run.json").write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                   "-m", "memlib.ietagc.launch", "--config", str(Path(tmp) / "run.json"),
                   "--folder", str(Path(tmp) / "r")]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall = time.perf_counter() - t0
        i = spec["iet"]
        visits = i["shards"] * i["rounds"] * i["steps_per_round"] * i["batch_size"]
        out["runs"][str(ranks)] = {"wall_s": round(wall, 2), "probe_visits": visits,
                                   "probe_visits_per_s": round(visits / wall, 1)}
        print(f"{ranks} rank(s): {wall:.1f} s for {visits} probe visits ({visits / wall:.0f} per s, TAA steps on top, "
              "process start included)")
    r = out["runs"]
    if "1" in r and "2" in r:
        out["speedup_2_ranks"] = round(r["2"]["probe_visits_per_s"] / r["1"]["probe_visits_per_s"], 3)
    path = repo_root() / "benchmarks" / "results" / "ietagc_ranks.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
