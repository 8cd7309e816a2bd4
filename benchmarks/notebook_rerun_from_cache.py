"""Issue 23's bar "the whole notebook reruns from cache in under a minute": execute a notebook with its default
parameters into a scratch figures folder, after a full run has filled the cache ($MEMLIB_CACHE or
build/cache), and record the wall time. The reference figures and their timings are not touched.

    python benchmarks/notebook_rerun_from_cache.py 03_mitigation
"""
import json
import sys
import tempfile
import time
from pathlib import Path

from memlib.harness.provenance import git_commit
from memlib.harness.reproduce import run_notebook
from memlib.paths import repo_root


def main(stem: str) -> None:
    nb = repo_root() / "notebooks" / f"{stem}.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        run_notebook(nb, Path(tmp) / "executed" / nb.name, {"progress": False}, Path(tmp) / "figures",
                     env={"TQDM_DISABLE": "1"})
        seconds = time.time() - t0
    out = Path(__file__).parent / "results" / f"{stem}_rerun_from_cache.json"
    out.write_text(json.dumps({"notebook": stem, "seconds": round(seconds, 1), "git_commit": git_commit(),
                               "note": "papermill run, kernel start included, cache filled by the full run"},
                              indent=1) + "\n")
    print(f"{stem} reran in {seconds:.1f} s -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "03_mitigation")
