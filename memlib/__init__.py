"""memlib: a reproducible companion to four papers on memorization in diffusion models.

Wen et al. (ICLR 2024) detection/explanation, AMG (Chen, Liu, Xu, CVPR 2024), PRSS (Chen et al. 2025) and
IET-AGC+ (Liu et al.). Notebooks in ``notebooks/`` call into this package; every number they report is
computed here and written next to the figures (see ``memlib.provenance``).
"""
__version__ = "0.1.0"
