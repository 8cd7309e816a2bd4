"""Repository-relative paths, so notebooks work whatever their working directory (papermill vs nbval)."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout root: $MEMLIB_ROOT, else the first parent of this file or of the cwd holding pyproject.toml."""
    env = os.environ.get("MEMLIB_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for p in (start, *start.parents):
            if (p / "pyproject.toml").exists() and (p / "memlib").is_dir():
                return p
    return Path.cwd().resolve()


def figures_dir(notebook: str) -> Path:
    """``figures/<notebook>/``; $MEMLIB_FIGURES overrides the base (tests write to a temp folder). ``notebook`` may
    also be a run folder from ``memlib.provenance.figures_name`` (``runs/<notebook>-<backend>-<digest>``)."""
    parts = Path(notebook).parts
    if not parts or Path(notebook).is_absolute() or ".." in parts:
        raise ValueError(f"figures folder name {notebook!r} must be relative to figures/ (e.g. '01_detection')")
    base = Path(os.environ["MEMLIB_FIGURES"]) if os.environ.get("MEMLIB_FIGURES") else repo_root() / "figures"
    d = base / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def code_dir() -> Path:
    """The memlib source whose hash keys caches and reruns: this package, or $MEMLIB_CODE_DIR (tests)."""
    env = os.environ.get("MEMLIB_CODE_DIR")
    return Path(env) if env else Path(__file__).resolve().parent


def checkpoints_dir() -> Path:
    """Shipped checkpoints live in ``checkpoints/``; $MEMLIB_CHECKPOINTS points elsewhere (tests, users)."""
    env = os.environ.get("MEMLIB_CHECKPOINTS")
    d = Path(env) if env else repo_root() / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cache_dir() -> Path:
    """Cached sweep points (ignored by git): ``build/cache`` or $MEMLIB_CACHE."""
    env = os.environ.get("MEMLIB_CACHE")
    d = Path(env) if env else repo_root() / "build" / "cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_dir() -> Path:
    return repo_root() / "data"
