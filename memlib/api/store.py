"""Results written as they finish, so an interrupted run resumes where it stopped.

``RowStore``: a CSV with one row per finished item and a sidecar ``<name>.settings.json`` holding what made the
rows (model identity, sampling settings). Reopened with the same settings, the finished rows are read back and
only the rest is computed; with other settings it refuses (the rows would mix two experiments) and says how
to start over. ``finish`` rewrites the file in order, atomically. ``default_out``: where a command writes when
the user names no output (``memlib.paths.outputs_dir``: never the current folder).
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from ..paths import outputs_dir


def default_out(command: str, model: str, *more: str) -> Path:
    """``outputs_dir(command)/<model>[-<more>...]``, one folder per model (and method), so that runs of other
    models resume into folders of their own instead of being refused."""
    name = Path(model).expanduser().name if Path(model).expanduser().is_dir() else model.replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join([name, *more])).strip("-.") or "model"
    return outputs_dir(command) / slug


class ResumeError(ValueError):
    """An output file holds results of other settings."""


def read_settings(path: Path, what: str) -> dict:
    """The JSON object in ``path`` (settings that made ``what``); ResumeError naming the file if it is missing,
    unreadable or not an object."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResumeError(f"{path} (the settings that made {what}) is unreadable ({type(e).__name__}), so {what} "
                          "cannot be resumed safely; pass --overwrite or another --out") from None
    if not isinstance(body, dict):
        raise ResumeError(f"{path} (the settings that made {what}) is not a JSON object, so {what} cannot be resumed "
                          "safely; pass --overwrite or another --out")
    return body


def check_same_settings(where: Path, old: dict, new: dict) -> None:
    """ResumeError naming every setting in which ``old`` (what made ``where``) differs from ``new``."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        what = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff)
        raise ResumeError(f"{where} holds results of other settings ({what}); pass --overwrite to replace them, "
                          "or another --out")


def _exclusive_lock(path: Path):
    """Hold ``.<name>.lock`` beside ``path`` for this process's lifetime, so two runs never write one file
    (each would compute everything and append duplicate rows). No-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(path.with_name(f".{path.name}.lock"), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ResumeError(f"another memlib run is writing {path}; wait for it to finish, or give another --out") \
            from None
    return f


class RowStore:
    def __init__(self, path: str | Path, settings: dict, columns: list[str], key: str, overwrite: bool = False):
        self.path, self.columns, self.key = Path(path).expanduser(), list(columns), key
        self.sidecar = self.path.with_name(self.path.name + ".settings.json")
        self.settings = json.loads(json.dumps(settings, default=str))
        if self.path.is_dir():
            raise ValueError(f"output {self.path} is a folder; give a file name such as {self.path / 'scores.csv'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _exclusive_lock(self.path)
        self.rows: dict[str, dict] = {}
        if self.path.exists() and not overwrite:
            self._resume()
        else:
            self._start()

    def _start(self) -> None:
        self.sidecar.write_text(json.dumps(self.settings, indent=1, sort_keys=True))
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns).writeheader()

    def _resume(self) -> None:
        old = read_settings(self.sidecar, str(self.path))
        check_same_settings(self.path, old, self.settings)
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != self.columns:
                raise ResumeError(f"{self.path}: columns {reader.fieldnames}, expected {self.columns}; pass "
                                  "--overwrite or another --out")
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    break   # a row cut short by the interruption: computed again
                self.rows[row[self.key]] = row
        self.finish(list(self.rows.values()))   # drops a torn last line, so appends start on a clean line

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, rows: list[dict]) -> None:
        """Append finished rows and flush them to disk."""
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, self.columns)
            for r in rows:
                w.writerow(r)
                self.rows[str(r[self.key])] = {k: str(v) for k, v in r.items()}
            f.flush()
            os.fsync(f.fileno())

    def discard(self) -> None:
        """Remove the file, its settings and its lock (its rows live on elsewhere, e.g. merged into another file)."""
        self.path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        if self._lock is not None:
            Path(self._lock.name).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def finish(self, ordered: list[dict]) -> None:
        """Write ``ordered`` (every row, final values) in place of the file, atomically."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(ordered)
        os.replace(tmp, self.path)
