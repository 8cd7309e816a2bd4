"""One harness for every memorization mitigation (notebooks 03-06): a method with one strength knob acts through
what the sampler and generator offer (rewritten prompts keyed to the original's noise, conditioning overrides,
hooks, extra branches, or another checkpoint); ``run.run_method`` generates with fixed seeds, caches, and scores
one typed row with privacy, utility and cost columns (``columns``).

Modules: ``method`` (the Method interface), ``registry`` (names -> methods, knob checks), ``baselines`` (Somepalli
et al.'s prompt augmentations, embedding noise, lower guidance), ``similarity`` (a differentiable similarity
index), ``evalset`` (the fixed dev/test evaluation prompts), ``columns`` and ``run``. This package imports no
paper package (they register their methods from above), so paper packages build on ``method`` without a cycle.
"""
