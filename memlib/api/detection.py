"""``memlib.detect``: Wen et al.'s detection (ICLR 2024, Sec. 3.1) on a user's model and prompt files.

    d(p) = mean over the first ``steps`` sampling steps and ``gens`` generations of || eps(x_t, e_p) - eps(x_t, e_0) ||_2

(``memlib.wen.scores``; no guidance scale inside the norm). A prompt is flagged when d(p) > threshold. The
threshold is given, or calibrated on prompts known not to be memorized so that at most ``fpr`` of them score
above it (below 1/fpr negatives that means none does). With labelled prompts the result holds AUC with a
bootstrap interval over prompts, TPR at 1 % FPR (at >= 100 negatives; below, the TPR at zero false positives,
named so) and an ROC plot. Scores are written to the CSV as each batch finishes; rerunning the same command
resumes (``memlib.api.store``). Under ``torchrun`` the prompts are sharded over the ranks, with the same scores
as one process (``memlib.api.distributed``).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..generation import GenerationConfig, generate
from ..metrics import bootstrap_roc, roc, tpr_statistic_name
from ..prompt_files import PromptRecord, read_many
from ..wen.scores import wen_score
from . import distributed
from .model_setup import default_batch_size, default_guidance, model_identity, open_model, weights_dtype
from .store import RowStore

COLUMNS = ["index", "prompt", "memorized", "kind", "source", "score", "flagged"]
DEMO_SIZES = (5, 5, 200)   # planted (memorized), held-out (not), calibration negatives (trained, not memorized)


@dataclass
class DetectResult:
    records: list[PromptRecord]
    scores: np.ndarray                 # (P,) d(p)
    threshold: float | None
    threshold_note: str                # where the threshold came from
    summary: dict = field(default_factory=dict)
    csv: Path | None = None
    roc: Path | None = None
    computed: int = 0                  # distinct prompts scored by this call
    read_back: int = 0                 # distinct prompts whose scores were read back from the CSV

    @property
    def flagged(self) -> np.ndarray | None:
        return None if self.threshold is None else self.scores > self.threshold

    def table(self, limit: int = 20) -> str:
        """The prompts, highest score first (at most ``limit``), as a plain-text table."""
        order = np.argsort(-self.scores, kind="stable")[:limit]
        lab = {True: "memorized", False: "not", None: "?"}
        lines = [f"{'score':>8}  {'flag':4}  {'label':9}  prompt"]
        flagged = self.flagged
        for i in order:
            flag = "" if flagged is None else ("YES" if flagged[i] else "-")
            text = self.records[i].text
            lines.append(f"{self.scores[i]:8.3f}  {flag:4}  {lab[self.records[i].memorized]:9}  "
                         f"{text if len(text) <= 70 else text[:67] + '...'}")
        if len(self.scores) > limit:
            lines.append(f"... {len(self.scores) - limit} more in the CSV")
        return "\n".join(lines)


class _Memory:
    """RowStore's interface without a file (the API called without ``out``)."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def __contains__(self, key):
        return key in self.rows

    def add(self, rows):
        self.rows.update({r["prompt"]: r for r in rows})

    def finish(self, ordered):
        pass


def calibrated_threshold(negative_scores, fpr: float = 0.01) -> tuple[float, str]:
    """The smallest threshold that flags at most ``fpr`` of ``negative_scores`` (flag: score > threshold)."""
    neg = np.sort(np.asarray(negative_scores, float))[::-1]
    if not 0 < fpr < 1:
        raise ValueError(f"fpr = {fpr!r}: give a false-positive rate in (0, 1), e.g. 0.01")
    if len(neg) == 0:
        raise ValueError("calibration needs at least one non-memorized prompt")
    k = int(np.floor(fpr * len(neg) + 1e-9))
    thr = float(neg[min(k, len(neg) - 1)])
    if k == 0:
        note = (f"calibrated: the largest of {len(neg)} non-memorized scores (fewer than {int(np.ceil(1 / fpr))} "
                f"negatives, so no false positives on them rather than {fpr:.0%} FPR)")
    else:
        note = f"calibrated: at most {k} of {len(neg)} non-memorized prompts ({fpr:.1%}) score above it"
    return thr, note


def _score(backend, records: list[PromptRecord], gen_cfg: GenerationConfig, steps: int, store, progress: bool,
           desc: str, threshold: float | None = None) -> tuple[np.ndarray, int, int]:
    """d(p) of every record: the ones in ``store`` read back, the rest computed batch by batch and stored;
    also how many distinct prompts were computed and read back (a repeated prompt is scored once)."""
    from tqdm.auto import tqdm

    distinct = list(dict.fromkeys(r.text for r in records))
    damaged = [t for t in distinct if t in store and not _is_number(store.rows[t].get("score"))]
    for t in damaged:      # a hand-edited or damaged row: score that prompt again rather than fail
        del store.rows[t]
    if damaged:
        warnings.warn(f"{len(damaged)} row(s) of {getattr(store, 'path', 'the results')} had no numeric score "
                      f"(first: {damaged[0][:60]!r}); they are scored again", stacklevel=2)
    todo = [t for t in distinct if t not in store]
    first = {}
    for i, r in enumerate(records):
        first.setdefault(r.text, (i, r))
    per_call = max(1, gen_cfg.batch_size // gen_cfg.n_gens)
    with tqdm(total=len(todo), disable=not progress or not todo, desc=desc, unit="prompt") as bar:
        for s in range(0, len(todo), per_call):
            texts = todo[s:s + per_call]
            g = generate(backend, texts, gen_cfg, stop_after=steps, keep_images=False, progress=False)
            scores = wen_score(g.text_norm, n_steps=steps)
            rows = []
            for t, sc in zip(texts, scores):
                i, r = first[t]
                rows.append(_row(i, r, float(sc), threshold))
            store.add(rows)
            bar.update(len(texts))
    scores = np.array([float(store.rows[r.text]["score"]) for r in records])
    return scores, len(todo), len(distinct) - len(todo)


def _scored(backend, records: list[PromptRecord], path: Path | None, desc: str, *, gen_cfg: GenerationConfig,
            steps: int, settings: dict, overwrite: bool, progress: bool,
            threshold: float | None = None) -> tuple[np.ndarray, int, int]:
    """``_score`` into the CSV at ``path`` (None: in memory), finished in the records' order; under torchrun the
    prompts are sharded over the ranks (``memlib.api.distributed``) and every rank returns the merged result."""
    if distributed.world()[1] > 1:
        return _scored_sharded(backend, records, path, desc, gen_cfg, steps, settings, overwrite, progress,
                               threshold)
    store = RowStore(path, settings, COLUMNS, "prompt", overwrite) if path else _Memory()
    scores, computed, read_back = _score(backend, records, gen_cfg, steps, store, progress, desc, threshold)
    store.finish([_row(i, r, s, threshold) for i, (r, s) in enumerate(zip(records, scores))])
    return scores, computed, read_back


def _scored_sharded(backend, records, path, desc, gen_cfg, steps, settings, overwrite, progress, threshold):
    """Rank 0 reads back the merged CSV; the prompts still to do are cut into the batches one process would
    run, dealt to the ranks, scored into per-rank CSVs (resumable) and merged on rank 0."""
    rank, n_ranks = distributed.world()
    merged, done = None, None
    if rank == 0:
        merged = RowStore(path, settings, COLUMNS, "prompt", overwrite) if path else _Memory()
        done = [t for t, row in merged.rows.items() if _is_number(row.get("score"))]
    done = set(distributed.broadcast(done))
    distinct = list(dict.fromkeys(r.text for r in records))
    todo = [t for t in distinct if t not in done]
    mine = set(distributed.shard(todo, max(1, gen_cfg.batch_size // gen_cfg.n_gens), rank, n_ranks))
    own = [r for r in records if r.text in mine]
    shard = RowStore(distributed.shard_path(path, rank, n_ranks), settings, COLUMNS, "prompt", overwrite) \
        if path else _Memory()
    computed = read_back = 0
    if own:
        _, computed, read_back = _score(backend, own, gen_cfg, steps, shard, progress and rank == 0,
                                        f"{desc} (rank 0 of {n_ranks})", threshold)
    parts = distributed.all_gather(({t: shard.rows[t] for t in mine}, computed, read_back))
    result = None
    if rank == 0:
        for rows, _, _ in parts:
            merged.rows.update(rows)
        scores = np.array([float(merged.rows[r.text]["score"]) for r in records])
        merged.finish([_row(i, r, s, threshold) for i, (r, s) in enumerate(zip(records, scores))])
        result = (scores, sum(p[1] for p in parts), len(done.intersection(distinct)) + sum(p[2] for p in parts))
    result = distributed.broadcast(result)   # after the merged file is written: the shards are redundant now
    if path:
        shard.discard()
    return result


def _is_number(text) -> bool:
    try:
        return np.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def _row(i: int, r: PromptRecord, score: float, threshold: float | None) -> dict:
    lab = "" if r.memorized is None else int(r.memorized)
    flag = "" if threshold is None else int(score > threshold)
    return {"index": i, "prompt": r.text, "memorized": lab, "kind": r.kind, "source": r.source,
            "score": f"{score:.6g}", "flagged": flag}


def demo_prompts(backend) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """The testbed's labelled demo: planted verbatim prompts and held-out ones, and trained-but-not-memorized
    captions to calibrate on (ground truth from the testbed's construction)."""
    from ..testbed.sources import generic_prompts, heldout_prompts

    data = getattr(backend, "testbed", None)
    if data is None:
        raise ValueError("--demo uses the testbed's labelled prompts: run it with --model testbed")
    data = data.data
    n_mem, n_held, n_cal = DEMO_SIZES
    mem = [PromptRecord(p.text, True, "testbed:verbatim", "planted verbatim") for p in data.prompts_in("verbatim")]
    held = heldout_prompts(data)
    held = held[::len(held) // n_held][:n_held]
    held = [PromptRecord(p.text, False, "testbed:heldout", "held-out") for p in held]
    cal = [PromptRecord(p.text, False, "testbed:generic", "trained, not memorized")
           for p in generic_prompts(data, n_cal, seed=1)]
    return mem[:n_mem] + held, cal


def _as_records(prompts, max_prompts: int) -> list[PromptRecord]:
    if isinstance(prompts, (str, Path)):
        return read_many(prompts, max_prompts)
    prompts = list(prompts or [])
    if prompts and all(isinstance(p, PromptRecord) for p in prompts):
        out = prompts
    elif prompts and all(isinstance(p, str) for p in prompts):
        if any(not p.strip() for p in prompts):
            raise ValueError("a prompt is empty; every prompt needs text")
        out = [PromptRecord(p, None, f"list:{i}") for i, p in enumerate(prompts)]
    elif prompts:
        raise TypeError("prompts: give a prompt file, a list of prompt strings or of PromptRecord")
    else:
        raise ValueError("the prompt list is empty; give a prompt file (jsonl, csv or text) or a list of prompts")
    return out[:max_prompts] if max_prompts else out


def _summary(records, scores, threshold, n_boot: int, seed: int) -> dict:
    lab = np.array([np.nan if r.memorized is None else float(r.memorized) for r in records])
    out: dict = {"n_prompts": len(records), "n_memorized": int(np.sum(lab == 1)),
                 "n_not_memorized": int(np.sum(lab == 0)), "n_unlabelled": int(np.isnan(lab).sum())}
    if threshold is not None:
        out["n_flagged"] = int((scores > threshold).sum())
    pos, neg = scores[lab == 1], scores[lab == 0]
    if len(pos) and len(neg):
        b = bootstrap_roc(pos, neg, n_boot=n_boot, seed=seed)
        out.update(auc=b.auc, auc_ci95=list(b.auc_ci), tpr_statistic=b.tpr_name, tpr=b.tpr, tpr_ci95=list(b.tpr_ci))
        if threshold is not None:
            out.update(tpr_at_threshold=float((pos > threshold).mean()), fpr_at_threshold=float((neg > threshold).mean()))
    return out


def _plot_roc(records, scores, summary: dict, threshold, path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lab = np.array([r.memorized for r in records], dtype=object)
    r = roc(scores[lab == True], scores[lab == False])  # noqa: E712 (None = unlabelled stays out)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(r.fpr, r.tpr, lw=2, label=f"d(p): AUC {summary['auc']:.3f} "
            f"[{summary['auc_ci95'][0]:.3f}, {summary['auc_ci95'][1]:.3f}]")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="chance")
    if threshold is not None and "fpr_at_threshold" in summary:
        ax.plot(summary["fpr_at_threshold"], summary["tpr_at_threshold"], "o", c="C3",
                label=f"threshold {threshold:.3g}")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(-0.01, 1), ylim=(0, 1.01),
           title=f"{title}\n{summary['n_memorized']} memorized vs {summary['n_not_memorized']} not")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def calibration_records(calibrate, max_prompts: int) -> tuple[list[PromptRecord], int]:
    """The calibration prompts (known not to be memorized) and how many rows labelled memorized were dropped;
    ``max_prompts`` caps them as it caps the prompts."""
    records = _as_records(calibrate, 0)
    kept = [r for r in records if r.memorized is not True]
    if not kept:
        raise ValueError(f"every one of the {len(records)} calibration prompts is labelled memorized; calibrate on "
                         "prompts known not to be memorized, e.g. --calibrate nemo:non_memorized")
    return (kept[:max_prompts] if max_prompts else kept), len(records) - len(kept)


def detect(prompts=None, model: str = "testbed", *, steps: int = 1, gens: int = 1, threshold: float | None = None,
           calibrate=None, fpr: float = 0.01, out: str | Path | None = None, max_prompts: int = 0,
           num_steps: int = 50, guidance_scale: float | None = None, seed: int = 0, batch_size: int | None = None,
           device: str | None = None, dtype: str | None = None, overwrite: bool = False, demo: bool = False,
           progress: bool = True, n_boot: int = 1000, backend=None) -> DetectResult:
    """Score every prompt with d(p), flag those above the threshold, and (with ``out``) write the CSV, the ROC
    plot of labelled prompts and a summary JSON. ``prompts``: a prompt file spec (``memlib.prompt_files``), a
    list of specs, of strings or of ``PromptRecord``; ``calibrate``: the same, prompts known not to be memorized.
    ``demo``: the testbed's 10 labelled prompts, calibrated on 200 of its trained-but-not-memorized captions."""
    if threshold is not None and calibrate is not None:
        raise ValueError("give a threshold or a calibration file, not both")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold = {threshold!r}: give a finite number")
    if demo and prompts is not None:
        raise ValueError("--demo brings its own prompts; drop --prompts")
    if not demo and prompts is None:
        raise ValueError("no prompts: pass --prompts FILE (jsonl, csv or plain text), 'nemo', or --demo")
    for name, v, lo in (("steps", steps, 1), ("gens", gens, 1), ("num_steps", num_steps, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} = {v!r}: give an integer >= {lo}")
    if steps > num_steps:
        raise ValueError(f"steps = {steps} is more than the {num_steps} sampling steps")
    if not demo:   # read the files before loading a model: a bad file fails in a second
        records = _as_records(prompts, max_prompts)
        cal, dropped = calibration_records(calibrate, max_prompts) if calibrate is not None else (None, 0)
    backend = backend or open_model(model, device, dtype, progress)
    if demo:   # a given threshold wins over the demo's calibration
        dropped = 0
        records, cal = demo_prompts(backend)
        cal = cal if threshold is None else None
    gen_cfg = GenerationConfig(num_steps=num_steps, n_gens=gens, seed=seed,
                               guidance_scale=default_guidance(backend) if guidance_scale is None else guidance_scale,
                               batch_size=batch_size or min(distributed.all_gather(default_batch_size(backend))))
    settings = {"model": model_identity(model, backend), "steps": steps, "gens": gens, "num_steps": num_steps,
                "guidance_scale": gen_cfg.guidance_scale, "seed": seed, "dtype": weights_dtype(backend)}
    out = Path(out).expanduser() if out is not None else None
    note = "given" if threshold is not None else "none: pass --threshold or --calibrate to flag prompts"
    stored = dict(gen_cfg=gen_cfg, steps=steps, settings=settings, overwrite=overwrite, progress=progress)
    if cal is not None:   # every rank gets the merged negatives, so every rank derives the same threshold
        neg, _, _ = _scored(backend, cal, out and out.with_name(out.stem + ".calibration.csv"), "calibrating",
                            **stored)
        threshold, note = calibrated_threshold(neg, fpr)
        if dropped:
            note += f"; {dropped} calibration rows labelled memorized were left out"
    t0 = time.perf_counter()
    scores, computed, read_back = _scored(backend, records, out, "scoring", threshold=threshold, **stored)
    seconds = time.perf_counter() - t0
    summary = _summary(records, scores, threshold, n_boot, seed)
    summary.update(threshold=threshold, threshold_note=note, settings=settings,
                   seconds_per_prompt=seconds / computed if computed else None,
                   model_evals_per_prompt=2 * steps * gens)
    res = DetectResult(records, scores, threshold, note, summary, out, None, computed, read_back)
    if out and distributed.world()[0] == 0:
        if "auc" in summary:
            res.roc = _plot_roc(records, scores, summary, threshold, out.with_name(out.stem + "_roc.png"),
                                f"Wen et al. detection on {model}")
        out.with_name(out.stem + ".summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return res
