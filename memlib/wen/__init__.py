"""Wen et al. (ICLR 2024): noise-magnitude detection, token significance, their mitigations and studies."""
