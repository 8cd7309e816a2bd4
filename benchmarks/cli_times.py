"""How long the ``memlib`` commands take on this machine (the run-time table in docs/cli.md).

Each command runs as a user would run it, in a fresh process (imports and model loading included), against the
shipped testbed; the outputs go to build/cli-bench/. Writes benchmarks/results/cli_times.json.

    .venv/bin/python benchmarks/cli_times.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from memlib.paths import repo_root
from memlib.provenance import cpu_model, device_info

N_EACH = 32   # planted verbatim and held-out prompts in the detection file


def _prompt_files(path: Path, negatives: Path) -> None:
    """Testbed prompts with their ground truth: planted verbatim (memorized) and held-out compositions; and 200
    trained-but-not-memorized captions to calibrate on."""
    from memlib.testbed.build import TestbedRef
    from memlib.testbed.sources import generic_prompts, heldout_prompts

    data = TestbedRef().load(progress=False).data
    rows = [{"caption": p.text, "memorized": True} for p in data.prompts_in("verbatim")[:N_EACH]]
    held = heldout_prompts(data)
    rows += [{"caption": p.text, "memorized": False} for p in held[::len(held) // N_EACH][:N_EACH]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    negatives.write_text("\n".join(p.text for p in generic_prompts(data, 200, seed=2)) + "\n")


def main() -> None:
    out = repo_root() / "build" / "cli-bench"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _prompt_files(out / "testbed.jsonl", out / "negatives.txt")
    (out / "few.txt").write_text("\n".join(json.loads(line)["caption"] for line in
                                           (out / "testbed.jsonl").read_text().splitlines()[::8]))
    memlib = [sys.executable, "-m", "memlib"]
    runs = {
        "doctor": ["doctor"],
        "detect --demo": ["detect", "--model", "testbed", "--demo", "--out", f"{out}/demo/scores.csv"],
        "detect --demo (again: resumed)": ["detect", "--model", "testbed", "--demo", "--out", f"{out}/demo/scores.csv"],
        f"detect, {2 * N_EACH} labelled prompts, calibrated": [
            "detect", "--model", "testbed", "--prompts", f"{out}/testbed.jsonl", "--calibrate",
            f"{out}/negatives.txt", "--out", f"{out}/detect/scores.csv"],
        "explain (Wen's setting: 50 steps, 4 generations)": [
            "explain", "--model", "testbed", "--prompt", json.loads((out / "testbed.jsonl").read_text()
                                                                    .splitlines()[0])["caption"],
            "--out", f"{out}/explain"],
    }
    for method in ("none", "wen_pe", "random_token", "amg", "prss"):
        runs[f"generate --method {method}, 8 prompts x 2 images"] = [
            "generate", "--model", "testbed", "--prompts", f"{out}/few.txt", "--method", method, "--gens", "2",
            "--out", f"{out}/gen-{method}"]
    results = []
    env = dict(os.environ, TQDM_DISABLE="1")
    for name, argv in runs.items():
        t0 = time.perf_counter()
        r = subprocess.run(memlib + argv + (["--quiet"] if argv[0] != "doctor" else []), capture_output=True,
                           text=True, env=env)
        seconds = time.perf_counter() - t0
        print(f"{seconds:7.1f} s  rc {r.returncode}  memlib {' '.join(argv)}", flush=True)
        row = {"command": name, "argv": ["memlib", *argv], "seconds": round(seconds, 2), "returncode": r.returncode,
               "stdout_tail": r.stdout.strip().splitlines()[-3:]}
        if argv[0] == "generate" and r.returncode == 0:
            recs = [json.loads(p.read_text()) for p in sorted(Path(argv[-1]).glob("0*.json"))]
            row.update(images=len(recs), acted=sum(x["acted"] for x in recs),
                       model_evals_per_image=sum(x["model_evals_per_image"] for x in recs) / len(recs),
                       plain_cfg_evals_per_image=recs[0]["plain_cfg_evals_per_image"],
                       seconds_per_image=sum(x["seconds_per_image"] for x in recs) / len(recs))
        if argv[0] == "detect" and r.returncode == 0:
            row["summary"] = json.loads(Path(argv[argv.index("--out") + 1]).with_name("scores.summary.json")
                                        .read_text())
            row["summary"].pop("settings", None)
        results.append(row)
    dest = repo_root() / "benchmarks" / "results" / "cli_times.json"
    dest.write_text(json.dumps({"machine": {"device": device_info(), "cpu": cpu_model(), "cores": os.cpu_count()},
                                "runs": results}, indent=1, default=str) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
