"""IET-AGC (Liu, Guan, Wu, Miao, ECCV 2024) and IET-AGC+ (Guan et al., arXiv 2502.09434): training-time
mitigation through shard-trained proxy models.

- ``methods``: the public training entry points (AGC, IET, MSR, TAA, the run plan and its launcher).
- ``study``: notebook 06's config and ``run_study`` (evaluates the shipped runs, trains missing ones).
- ``plots``: notebook 06's figures; ``report``: its headline rows, tables and the papers' claims as measured.
- ``privacy``: the three privacy columns per sample (the papers' criterion, the independent copy detector,
  nearest-is-planted) and paired differences; ``summary``: what the study writes to ``metrics.json``.
- ``agc``, ``iet``, ``taa``, ``launch``, ``runs``, ``probe``, ``premise``, ``frontier``: the implementation.
"""
