"""Every mitigation method in one registry: importing this module registers the baselines
(``mitigate.baselines``), Wen et al.'s two mitigations (``wen.methods``), AMG (``amg.methods``) and PRSS's three
variants (``prss.methods``), and gives the registry's functions over all of them.
"""
from ..amg import methods as _amg  # noqa: F401  (each import registers its methods)
from ..mitigate import baselines as _baselines  # noqa: F401
from ..mitigate.registry import available, describe, make_method, sweep
from ..prss import methods as _prss  # noqa: F401
from ..wen import methods as _wen  # noqa: F401

__all__ = ["available", "describe", "make_method", "sweep"]
