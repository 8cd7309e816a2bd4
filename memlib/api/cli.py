"""The ``memlib`` command: detect, explain, generate, methods and doctor on any model (``memlib.api``),
``train-testbed`` (the one command that trains the testbed), plus the project's own ``results`` and ``reproduce``
(``memlib.harness``; they need a checkout). Every bad input ends with one line naming the problem and exit
status 2 (MEMLIB_DEBUG=1 shows the traceback); an interrupted run says how to resume (exit 130). Outputs go
where ``--out`` says, else under ``memlib.paths.outputs_dir`` (never the current folder), and the command
prints where.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..paths import CheckoutNotFoundError, outputs_dir, repo_root
from .model_setup import TRAIN_TESTBED_MINUTES
from .store import default_out

EXAMPLES = """examples:
  memlib detect --model testbed --demo
  memlib detect --model tiny-sd --prompts nemo --max-prompts 2 --num-steps 2     (random weights: a smoke test)
  memlib detect --model path/to/sd --prompts nemo --max-prompts 50 --out scores.csv
  memlib detect --model CompVis/stable-diffusion-v1-4 --prompts mine.txt --calibrate nemo:non_memorized --out s.csv
  torchrun --nproc_per_node 4 -m memlib detect --model path/to/sd --prompts nemo --out s.csv   (one rank per GPU)
  memlib explain --model testbed --prompt "small magenta square at the bottom right rhetov"
  memlib generate --model testbed --prompts mine.txt --method wen_pe --gens 4 --knob l_target=2.26 --out images/
  memlib methods
  memlib doctor
  memlib train-testbed                         (only without the shipped weights: about 40 min on 2 cores)
  memlib reproduce --quick                     (in a checkout: every notebook with tiny parameters)
"""


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="testbed", help="'testbed' (shipped with the repository), 'tiny-sd' (random "
                   "weights, smoke tests), a save_pretrained folder or a hub id (offline-first) [testbed]")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps [best available]")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="[fp16 on a GPU, else fp32]")
    p.add_argument("--batch-size", type=int, default=None, help="images per model call [fits the free memory]")
    p.add_argument("--num-steps", type=int, default=50, help="DDIM sampling steps [50]")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale [7.5; the testbed: 3]")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noises [0]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="memlib", description="Memorization in diffusion models: detect, explain and "
                                 "mitigate on any model.", epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect", help="score prompts with Wen et al.'s magnitude and flag memorized ones")
    _model_options(d)
    d.add_argument("--prompts", action="append", help="prompt file: Wen's jsonl, csv (NeMo's too), plain text; "
                   "FILE@memorized / FILE@non_memorized labels a file; 'nemo' = both vendored NeMo sets. Repeatable")
    d.add_argument("--demo", action="store_true", help="10 labelled testbed prompts, calibrated threshold (seconds)")
    d.add_argument("--steps", type=int, default=1, help="sampling steps averaged into the score [1]")
    d.add_argument("--gens", type=int, default=1, help="generations averaged into the score [1]")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="flag prompts scoring above this")
    g.add_argument("--calibrate", metavar="NEGATIVES", help="prompt file known NOT memorized: threshold at --fpr")
    d.add_argument("--fpr", type=float, default=0.01, help="false-positive rate of the calibrated threshold [0.01]")
    d.add_argument("--max-prompts", type=int, default=0, help="the first N of each prompt set [all]")
    d.add_argument("--out", default=None, help="CSV of scores (ROC PNG and summary JSON beside it) "
                   "[OUTPUTS/detect/MODEL/scores.csv; OUTPUTS: build/outputs in a checkout, see docs/install.md]")
    d.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    d.add_argument("--show", type=int, default=20, help="rows printed [20]")
    e = sub.add_parser("explain", help="per-token significance of one prompt (Wen et al. Sec. 3.2)")
    _model_options(e)
    e.add_argument("--prompt", required=True, help="the prompt to explain")
    e.add_argument("--gens", type=int, default=4, help="generations averaged [4, Wen's setting]")
    e.add_argument("--steps", type=int, default=None, help="average over the first N steps [all, Wen's setting]")
    e.add_argument("--out", default=None, help="folder for tokens.csv and tokens.png [OUTPUTS/explain/MODEL]")
    n = sub.add_parser("generate", help="images under a mitigation method, with a JSON record per image")
    _model_options(n)
    n.add_argument("--prompts", action="append", required=True, help="prompt file(s), as for detect")
    n.add_argument("--method", default="none", help="see `memlib methods` [none: plain CFG]")
    n.add_argument("--knob", default=None, help="the method's strength, VALUE or NAME=VALUE [its default]; "
                   "wen_pe's l_target is the joint first-step magnitude over a prompt's --gens noises, so it "
                   "grows about as sqrt(gens) (notebook 03's 2.26 is for 4)")
    n.add_argument("--gens", type=int, default=1, help="images per prompt [1]")
    n.add_argument("--max-prompts", type=int, default=0, help="the first N of each prompt set [all]")
    n.add_argument("--out", default=None, help="folder for the images [OUTPUTS/generate/MODEL-METHOD]")
    n.add_argument("--overwrite", action="store_true", help="replace the images in --out instead of resuming")
    sub.add_parser("methods", help="the mitigation methods, their knobs and where they run")
    sub.add_parser("doctor", help="check the install: versions, device, testbed, cached models, hub")
    t = sub.add_parser("train-testbed", help="train the testbed's weights into the checkpoints folder (about "
                       f"{TRAIN_TESTBED_MINUTES} min on 2 cores; resumes; only needed without the shipped ones)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("results", help="regenerate the generated blocks of the README and docs/ from figures/*/metrics.json (checkout)")
    sub.add_parser("reproduce", add_help=False, help="execute the notebooks (checkout; `memlib reproduce --help` "
                   "for its options: --quick, --only, --force)")
    return ap


def _common(a) -> dict:
    return dict(model=a.model, device=a.device, dtype=a.dtype, num_steps=a.num_steps, guidance_scale=a.guidance,
                seed=a.seed, progress=not a.quiet)


def _records(specs, max_prompts: int):
    """The prompt files named on the command line (a list of strings here is files, not prompts)."""
    from ..prompt_files import read_many
    return read_many(specs, max_prompts) if specs else None


def _note(a) -> None:
    """Say what the user must know about the model before its numbers (tiny-sd: random weights)."""
    from .model_setup import model_note
    note = model_note(a.model)
    if note:
        print(f"note: {note}", flush=True)


def _detect(a) -> int:
    from . import distributed
    from .detection import detect
    a.out = a.out or str(outputs_dir("demo") / "scores.csv" if a.demo else
                         default_out("detect", a.model) / "scores.csv")
    a.device = distributed.start(a.device)   # under torchrun: join its process group, one GPU per rank
    try:
        rank = distributed.world()[0]
        if rank == 0:
            _note(a)
        res = detect(_records(a.prompts, a.max_prompts), steps=a.steps, gens=a.gens, threshold=a.threshold,
                     calibrate=_records([a.calibrate], 0) if a.calibrate else None, fpr=a.fpr, out=a.out,
                     batch_size=a.batch_size, overwrite=a.overwrite, demo=a.demo,
                     **dict(_common(a), progress=not a.quiet and rank == 0))
    finally:
        distributed.stop()
    return _print_detection(a, res) if rank == 0 else 0


def _print_detection(a, res) -> int:
    print(res.table(a.show))
    s = res.summary
    print(f"\nthreshold: {'-' if res.threshold is None else f'{res.threshold:.4g}'} ({res.threshold_note})")
    if res.threshold is not None:
        print(f"flagged: {s['n_flagged']} of {s['n_prompts']} prompts")
    if "auc" in s:
        tpr = "TPR@1%FPR" if s["tpr_statistic"] == "tpr_at_1fpr" else "TPR at zero FP (< 100 negatives)"
        print(f"labelled: {s['n_memorized']} memorized, {s['n_not_memorized']} not; AUC {s['auc']:.3f} "
              f"[{s['auc_ci95'][0]:.3f}, {s['auc_ci95'][1]:.3f}], {tpr} {s['tpr']:.2f} "
              f"[{s['tpr_ci95'][0]:.2f}, {s['tpr_ci95'][1]:.2f}] (95 % bootstrap over prompts)")
    repeats = len(res.scores) - res.computed - res.read_back
    print(f"scored {res.computed} prompt(s) now, {res.read_back} read back"
          + (f", {repeats} repeated prompt(s) scored once" if repeats else "") + f"; wrote {res.csv}"
          + (f" and {res.roc}" if res.roc else ""))
    return 0


def _explain(a) -> int:
    from .explanation import explain
    a.out = a.out or str(default_out("explain", a.model))
    _note(a)
    res = explain(a.prompt, gens=a.gens, steps=a.steps, out=a.out, **_common(a))
    print(res.table())
    print(f"wrote {res.csv} and {res.png}")
    return 0


def _generate(a) -> int:
    from .image_generation import generate
    a.out = a.out or str(default_out("generate", a.model, a.method))
    _note(a)
    res = generate(_records(a.prompts, a.max_prompts), method=a.method, knob=a.knob, out=a.out, gens=a.gens,
                   batch_size=a.batch_size, overwrite=a.overwrite, **_common(a))
    print(res.table())
    return 0


def _methods(_a) -> int:
    from .methods import available, describe
    for name in available():
        d = describe(name)
        k = d["knob"]
        default = f"{k.name}={d['default']:g}"
        where = "any model" if d["scope"] == "any" else "testbed only"
        print(f"{name:16} {default:20} {d['kind']:9} {where:12} {d['description']}")
    return 0


def _doctor(_a) -> int:
    from .checkup import doctor, report
    checks = doctor()
    print(report(checks))
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"\n{len(failed)} problem(s): {', '.join(failed)}" if failed else "\nready")
    return 1 if failed else 0


def _train_testbed(a) -> int:
    from .model_setup import train_testbed
    tb = train_testbed(progress=not a.quiet)
    print(f"the testbed is trained: {tb.folder} (`memlib detect --model testbed --demo` uses it)")
    return 0


def _results(_a) -> int:
    from ..harness.report import PAGES, results_table, update_pages

    root = repo_root()   # outside a checkout: one line saying so, before anything is read
    changed = update_pages(root)
    print(results_table())
    print(f"updated: {', '.join(str(p.relative_to(root)) for p in changed)}" if changed else
          f"{', '.join(PAGES)}: already up to date")
    return 0


def _reproduce(args: list[str]) -> int:
    """``memlib reproduce ARGS``: ``memlib.harness.reproduce`` with ARGS as they are (it parses its own)."""
    try:
        repo_root()
    except CheckoutNotFoundError as e:
        print(f"memlib reproduce: error: {e}", file=sys.stderr)
        return 2
    from ..harness.reproduce import main as reproduce_main
    return reproduce_main(args, prog="memlib reproduce")


def _errors() -> tuple[type, ...]:
    from ..backends.hub import ModelUnavailableError
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..prompts import PromptFileError
    return (ValueError, TypeError, FileNotFoundError, PromptFileError, ModelUnavailableError, ConfigError,
            CheckpointError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["reproduce"]:
        return _reproduce(argv[1:])
    a = _parser().parse_args(argv)
    run = {"detect": _detect, "explain": _explain, "generate": _generate, "methods": _methods,
           "doctor": _doctor, "train-testbed": _train_testbed, "results": _results}[a.cmd]
    if getattr(a, "batch_size", None) is not None and a.batch_size < 1:
        print(f"memlib {a.cmd}: error: --batch-size {a.batch_size}: give a positive number", file=sys.stderr)
        return 2
    try:
        return run(a)
    except KeyboardInterrupt:
        out = getattr(a, "out", None)
        print(f"\nmemlib {a.cmd}: interrupted. Finished results are kept" + (f" in {Path(out)}" if out else "")
              + "; rerun the same command to resume.", file=sys.stderr)
        return 130
    except _errors() as e:
        if os.environ.get("MEMLIB_DEBUG"):
            raise
        print(f"memlib {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
