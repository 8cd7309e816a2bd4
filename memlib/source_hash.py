"""The hash of memlib's source that keys caches and reruns (``memlib.cache.code_fingerprint``).

It is taken when ``memlib`` is imported (``memlib/__init__.py``), not when the first result is cached: a source
file edited while a process runs must not have that process's results (computed by the code it imported) stored
under the edited code's key. Standard library only, so ``import memlib`` stays light.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def tree_hash(folder: Path, pattern: str = "*.py") -> str:
    """SHA-256 over the relative paths and contents of the files under ``folder`` matching ``pattern``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob(pattern)):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def source_fingerprint(folder: str) -> str:
    """``tree_hash(folder)``, computed once per folder and process."""
    return tree_hash(Path(folder))


def fingerprint_at_import() -> str:
    """Hash the source memlib is being imported from now ($MEMLIB_CODE_DIR for tests)."""
    env = os.environ.get("MEMLIB_CODE_DIR")
    return source_fingerprint(str(Path(env) if env else PACKAGE))
