"""The training runs of notebook 06 (IET-AGC+ on the digits; Liu et al., ECCV 2024; Guan et al., arXiv
2502.09434), their folders, and launching them when they are missing.

Every run sees the same number of probe sample visits: the baseline trains one model on all rows for
``steps`` x ``batch``; an IET run trains K proxies for ``rounds`` x ``steps_per_round`` each, with
K x rounds x steps_per_round = steps. TAA's extra augmented steps come on top (as in the authors' budgets), so a
baseline trained twice as long (``long``) extends the frontier past them. Runs: the baseline (two seeds, with
probes along training), IET, IET+AGC, IET+AGC+MSR, IET+AGC+MSR+TAA (the full method, two seeds), the long
baseline, and a control for IET itself (``bigbatch``): one model on all rows with K times the batch for 1/K of the
steps, i.e. as many sequential optimizer steps as an IET proxy takes, at the same visits. Folders are ``checkpoints/ietagc-<name>-<digest of the spec>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CheckpointError, file_sha256, set_aside, verify_checkpoint
from ..config import Config, check_range
from ..paths import checkpoints_dir, code_dir
from .probe import read_progress

# the source files whose code decides a run's weights and the probes it records (relative to memlib/): a run
# records their hashes when it starts training, so a finished run made by other code can be told apart
TRAINING_SOURCES = ("ietagc/launch.py", "ietagc/iet.py", "ietagc/agc.py", "ietagc/taa.py", "ietagc/probe.py",
                    "ietagc/finetune.py", "testbed/digits.py", "testbed/model.py", "train.py", "schedule.py",
                    "sampling.py")
CODE_RECORD = "training_code.json"

COMPONENTS = {"iet": {}, "agc": {"agc": True}, "msr": {"agc": True, "msr": True},
              "full": {"agc": True, "msr": True, "taa": True}}


@dataclass
class RunPlan(Config):
    steps: int = 3000            # baseline optimizer steps (batch ``batch``); IET matches its sample visits
    batch: int = 128
    shards: int = 4              # K
    rounds: int = 10             # R
    frontier_points: int = 8     # probes along the baseline's training
    seeds: tuple = (0, 1)        # baseline and full method
    block_out_channels: tuple = (16, 32)
    n_duplicated: int = 20
    copies: int = 30
    max_images: int = 0
    probe_samples: int = 1000
    probe_steps: int = 50        # DDIM steps of the probes' samples
    probe_noises: int = 4        # noises per row of the probes' premise check
    long_factor: int = 2         # the long baseline's visits, in baselines
    bigbatch: bool = True        # the control: K x batch, steps / K
    component_seeds: bool = False  # IET, +AGC and +MSR for every seed too (else the first seed only)
    budgets: tuple = ()          # fractions of ``steps``: one baseline per budget, annealed to completion at it

    def validate(self) -> None:
        check_range("shards", self.shards, 1, 256)
        check_range("rounds", self.rounds, 1)
        check_range("frontier_points", self.frontier_points, 1)
        if self.steps % (self.shards * self.rounds):
            raise ValueError(f"steps = {self.steps} must split evenly into shards x rounds = "
                             f"{self.shards * self.rounds} proxy rounds (equal sample visits)")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for b in self.budgets:
            if not 0 < b or int(round(self.steps * b)) < 1:
                raise ValueError(f"budget {b}: give fractions of steps above 0 (e.g. 0.25,0.5)")

    def _common(self) -> dict:
        return {"data": {"n_duplicated": self.n_duplicated, "copies": self.copies, "max_images": self.max_images},
                "model": {"block_out_channels": list(self.block_out_channels)},
                "probe": self._probe()}

    def _probe(self) -> dict:
        # the defaults stay out of the spec, so the shipped runs keep their folders (named by the spec's digest)
        out = {"n_samples": self.probe_samples}
        if self.probe_steps != 50:
            out["steps"] = self.probe_steps
        if self.probe_noises != 4:
            out["n_noise"] = self.probe_noises
        return out

    def _baseline(self, seed: int, factor: int = 1, batch_factor: int = 1) -> dict:
        steps = self.steps * factor // batch_factor
        every = max(1, steps // (self.frontier_points * factor))
        return {"baseline": {"steps": steps, "batch_size": self.batch * batch_factor, "lr": 1e-3,
                             "warmup_steps": max(1, min(100, steps // 30)),
                             "checkpoint_every": every, "seed": seed},
                "frontier": list(range(every, steps + 1, every)), **self._common()}

    def _annealed(self, seed: int, steps: int) -> dict:
        """A baseline whose whole schedule (warm-up, cosine decay) ends at ``steps``: a frontier point that is
        annealed like every IET run's final model, not a mid-schedule checkpoint of a longer run."""
        return {"baseline": {"steps": steps, "batch_size": self.batch, "lr": 1e-3,
                             "warmup_steps": max(1, min(100, steps // 30)), "checkpoint_every": steps,
                             "seed": seed},
                "frontier": [steps], **self._common()}

    def _iet(self, seed: int, flags: dict) -> dict:
        per = self.steps // (self.shards * self.rounds)
        return {"iet": {"shards": self.shards, "rounds": self.rounds, "steps_per_round": per,
                        "batch_size": self.batch, "lr": 1e-3,
                        "warmup_steps": max(1, min(100, per * self.rounds // 30)), "seed": seed, **flags},
                **self._common()}

    def specs(self) -> dict[str, dict]:
        """name -> spec, in launch order."""
        s0 = self.seeds[0]
        out = {f"baseline-s{s0}": self._baseline(s0), f"full-s{s0}": self._iet(s0, COMPONENTS["full"])}
        for name in ("iet", "agc", "msr"):
            out[f"{name}-s{s0}"] = self._iet(s0, COMPONENTS[name])
        for s in self.seeds[1:]:
            out[f"baseline-s{s}"] = self._baseline(s)
            out[f"full-s{s}"] = self._iet(s, COMPONENTS["full"])
            if self.component_seeds:
                for name in ("iet", "agc", "msr"):
                    out[f"{name}-s{s}"] = self._iet(s, COMPONENTS[name])
        for b in self.budgets:
            steps = int(round(self.steps * b))
            out[f"annealed-b{steps}-s{s0}"] = self._annealed(s0, steps)
        if self.long_factor > 1:
            out[f"long-s{s0}"] = self._baseline(s0, self.long_factor)
        if self.bigbatch and self.shards > 1:
            out[f"bigbatch-s{s0}"] = self._baseline(s0, batch_factor=self.shards)
        return out


def run_folder(name: str, spec: dict) -> Path:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return checkpoints_dir() / f"ietagc-{name}-{digest}"


def finished(folder: Path) -> bool:
    """The final weights are written last (after every probe), so they mark a finished run."""
    return (folder / "final" / "meta.json").exists()


def training_code() -> dict[str, str]:
    """{source file: SHA-256} of ``TRAINING_SOURCES`` in the memlib that runs now ($MEMLIB_CODE_DIR in tests)."""
    root = code_dir()
    return {rel: file_sha256(root / rel) for rel in TRAINING_SOURCES if (root / rel).is_file()}


def code_changes(folder: Path) -> list[str] | None:
    """The training source files that differ from those the run in ``folder`` was made with; None when the run
    holds no record (it predates the record, or never started)."""
    try:
        recorded = json.loads((folder / CODE_RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        recorded = None
    if not isinstance(recorded, dict):
        return [f"{CODE_RECORD} (damaged)"]
    now = training_code()
    return sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))


def _record_training_code(folder: Path) -> None:
    tmp = folder / f"{CODE_RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(training_code(), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / CODE_RECORD)


def probe_keys(spec: dict) -> list[str]:
    """The keys of ``progress.json`` a finished run holds: one probe per IET round, or per baseline checkpoint."""
    if "iet" in spec:
        return [f"round-{r:03d}" for r in range(spec["iet"]["rounds"])]
    steps = sorted(set(int(s) for s in spec.get("frontier", [])) | {spec["baseline"]["steps"]})
    return [f"step-{s:05d}" for s in steps]


def checked_progress(name: str, spec: dict, folder: Path) -> dict:
    """A finished run's ``progress.json``, with every probe the study reads; else a one-line error saying what to do."""
    progress = read_progress(folder)
    missing = [k for k in probe_keys(spec) if k not in progress]
    if missing:
        shown = f"{missing[:3]}{' ...' if len(missing) > 3 else ''}"
        raise CheckpointError(f"{folder / 'progress.json'} lacks the probes {shown} of run {name}: restore the file "
                              f"(git checkout, if it ships) or move {folder} aside so the run trains again")
    return progress


def launch(name: str, spec: dict, ranks: int = 2, log=None, device: str | None = None) -> Path:
    """Train ``spec`` in its folder (resuming) unless it has finished: IET runs under ``torchrun`` with ``ranks``
    processes (1: in this process), the baseline as one process, on ``device`` (a command-line argument of the
    launched processes, never part of the spec: the spec's digest names the folder; None: the CPU). Damaged final weights are set aside (kept) and
    rebuilt from what the run saved (its rounds, or the baseline's checkpoints; what is missing trains again)."""
    folder = run_folder(name, spec)
    if finished(folder):
        try:
            verify_checkpoint(folder / "final")
            return folder
        except CheckpointError as e:
            set_aside(folder / "final", f"the final weights of run {name} are damaged ({e})")
    changed = code_changes(folder)
    if changed:     # resuming would give weights that neither version of the code makes
        set_aside(folder, f"the unfinished run {name} was begun by other training code ({', '.join(changed)})")
    folder.mkdir(parents=True, exist_ok=True)
    if changed is None or changed:
        _record_training_code(folder)
    (folder / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    if "iet" in spec and ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "memlib.ietagc.launch", "--config", str(folder / "spec.json"), "--folder", str(folder)]
    elif ranks > 1:
        cmd = [sys.executable, "-m", "memlib.ietagc.launch", "--config", str(folder / "spec.json"),
               "--folder", str(folder)]
    else:
        from .launch import run
        run(spec, folder, device=device)
        return folder
    if device not in (None, "cpu"):
        cmd += ["--device", str(device)]
    log = log or sys.stderr
    print(f"[ietagc] training {name}: {' '.join(cmd[1:])}", file=log, flush=True)
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, env=dict(os.environ), stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stderr:            # progress passes through; the tail explains a failure
            tail.append(line)
            log.write(line)
            log.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"training {name} failed (exit {proc.returncode}); it resumes from {folder} when "
                           f"run again. Its last messages:\n{''.join(tail)[-3000:]}")
    return folder
