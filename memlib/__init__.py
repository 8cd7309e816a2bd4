"""memlib: a reproducible companion to four papers on memorization in diffusion models.

Wen et al. (ICLR 2024) detection/explanation, AMG (Chen, Liu, Xu, CVPR 2024), PRSS (Chen et al. 2025) and
IET-AGC+ (Liu et al.). Notebooks in ``notebooks/`` call into this package; every number they report is
computed here and written next to the figures (see ``memlib.provenance``).

On your own model: ``memlib.detect``, ``memlib.explain``, ``memlib.generate`` and ``memlib.doctor``
(``memlib.api``; loaded on first use, so ``import memlib`` stays light).
"""
from .source_hash import fingerprint_at_import as _fingerprint_at_import

__version__ = "0.1.0"
_fingerprint_at_import()   # the source this process runs, before any file can change under it
_API = ("detect", "explain", "generate", "doctor")


def __getattr__(name: str):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'memlib' has no attribute {name!r}")
