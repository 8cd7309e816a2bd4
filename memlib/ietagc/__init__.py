"""IET-AGC (Liu, Guan, Wu, Miao, ECCV 2024) and IET-AGC+ (Guan et al., arXiv 2502.09434): training-time
mitigation through shard-trained proxy models.

- ``agc``: anti-gradient control (the per-timestep loss bank and its skip rule), threshold-aware augmentation's
  strength (TAA) and the memory-sample redistribution ring (MSR).
"""
