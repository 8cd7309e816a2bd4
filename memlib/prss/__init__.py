"""PRSS (Chen, Liu, Shah, Xu, "Enhancing Privacy-Utility Trade-offs to Mitigate Memorization in Diffusion Models",
CVPR 2025); the equations follow the released code, the only primary source.

- ``reanchor``: prompt re-anchoring (PR), a sampler hook with the original prompt as an extra branch.
- ``search``: semantic prompt search (SS): first-step magnitudes of candidate rewrites, early stop or argmin.
- ``paraphrase``: candidate sources (testbed grammar, the reference jsonl format, any callable).
- ``methods``: PR, SS and PRSS as harness methods with the knob lambda.
"""
