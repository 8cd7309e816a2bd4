"""Anti-Memorization Guidance (Chen, Liu, Xu, "Towards Memorization-Free Diffusion Models", CVPR 2024).

- ``guidance``: the three guidance terms and the per-step switch as one sampler hook (Eqs. 10, 13-17).
- ``threshold`` / ``calibrate``: lambda_t in the released code's exponential form, fitted on held-out generations.
- ``methods``: AMG as a method of the mitigation harness (``amg``), with its settings in the cache key, and the
  entry points for running it on another model (the guidance hook, its settings, the calibration).
- ``digits``: the DDPM experiments (Tables 2-3) on scikit-learn digits, dissimilarity guidance only.
- ``study`` / ``analysis``: notebook 04's experiments, its dev-half choices and its metrics.
- ``plots`` / ``report``: notebook 04's figures; its README rows, results tables and claims.
"""
