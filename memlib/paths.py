"""Where memlib reads and writes, inside a checkout or installed from a wheel.

Inside a checkout (the folder holding ``pyproject.toml`` beside this package, or ``$MEMLIB_ROOT``) checkpoints,
figures and caches live in the checkout (``checkpoints/``, ``figures/``, ``build/cache``) and the command line's
default outputs under ``build/outputs/``. Installed from a wheel they go to ``$MEMLIB_HOME``, else the user's data
folder (``platformdirs``; caches to the user's cache folder). ``$MEMLIB_CHECKPOINTS``, ``$MEMLIB_FIGURES`` and
``$MEMLIB_CACHE`` override one folder each. Nothing here creates a folder except ``figures_dir`` (written next).
Data that memlib reads at run time (NeMo's prompt lists) ships inside the package: ``package_data_dir``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class CheckoutNotFoundError(FileNotFoundError):
    """A command needs the memlib repository (notebooks, README, reference figures) but runs from an install."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "no memlib checkout"


def checkout_root() -> Path | None:
    """$MEMLIB_ROOT, else the checkout this package was imported from (``pyproject.toml`` beside ``memlib/``),
    else None: memlib runs from an installed wheel."""
    env = os.environ.get("MEMLIB_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "memlib").is_dir() else None


def repo_root() -> Path:
    """The checkout root; CheckoutNotFoundError (one line: what to do) when memlib runs from an install."""
    root = checkout_root()
    if root is None:
        raise CheckoutNotFoundError(f"memlib at {PACKAGE} is installed, not a checkout, and this needs the memlib "
                                    "repository: run it in a clone, or set MEMLIB_ROOT to one")
    return root


def home_dir() -> Path:
    """Outside a checkout: $MEMLIB_HOME, else the user's data folder (e.g. ~/.local/share/memlib)."""
    env = os.environ.get("MEMLIB_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir
    return Path(user_data_dir("memlib", appauthor=False))


def _base() -> Path:
    root = checkout_root()
    return root if root is not None else home_dir()


def figures_dir(notebook: str) -> Path:
    """``figures/<notebook>/`` (created); $MEMLIB_FIGURES overrides the base (tests write to a temp folder).
    ``notebook`` may also be a run folder from ``memlib.provenance.figures_name``
    (``runs/<notebook>-<backend>-<digest>``)."""
    parts = Path(notebook).parts
    if not parts or Path(notebook).is_absolute() or ".." in parts:
        raise ValueError(f"figures folder name {notebook!r} must be relative to figures/ (e.g. '01_detection')")
    base = Path(os.environ["MEMLIB_FIGURES"]) if os.environ.get("MEMLIB_FIGURES") else _base() / "figures"
    d = base / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def code_dir() -> Path:
    """The memlib source whose hash keys caches and reruns: this package, or $MEMLIB_CODE_DIR (tests)."""
    env = os.environ.get("MEMLIB_CODE_DIR")
    return Path(env) if env else PACKAGE


def checkpoints_dir() -> Path:
    """$MEMLIB_CHECKPOINTS, else the checkout's shipped ``checkpoints/``, else ``checkpoints/`` under
    ``home_dir()`` (not created here: writers create what they write)."""
    env = os.environ.get("MEMLIB_CHECKPOINTS")
    return Path(env).expanduser() if env else _base() / "checkpoints"


def cache_dir() -> Path:
    """Cached sweep points: $MEMLIB_CACHE, else the checkout's ``build/cache`` (ignored by git), else
    $MEMLIB_HOME/cache or the user's cache folder (not created here)."""
    env = os.environ.get("MEMLIB_CACHE")
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    if root is not None:
        return root / "build" / "cache"
    if os.environ.get("MEMLIB_HOME"):
        return home_dir() / "cache"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("memlib", appauthor=False))


def outputs_dir(command: str) -> Path:
    """Default output folder of a ``memlib`` command: the checkout's ``build/outputs/<command>`` (ignored by git),
    else ``outputs/<command>`` under ``home_dir()`` (not created here)."""
    root = checkout_root()
    return (root / "build" / "outputs" if root is not None else home_dir() / "outputs") / command


def package_data_dir() -> Path:
    """Data shipped inside the package and read at run time (``memlib/data/``: NeMo's prompt lists)."""
    return PACKAGE / "data"
