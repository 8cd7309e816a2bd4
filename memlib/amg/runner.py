"""Notebook 04's runs on one testbed (Chen, Liu, Xu, CVPR 2024): harness methods at the study's generation
settings, scored by that testbed's evaluator, every row kept for timings.json (its seconds stay out of the
metrics), and AMG built over that testbed's training set at a given threshold."""
from __future__ import annotations

from ..mitigate.columns import Evaluator, MethodRow
from ..mitigate.run import MethodRun, run_content_reference, run_method
from .descriptor_sigma import lowpass_per_prompt
from .methods import AMGSetup, amg_method


class Runner:
    """``run(method, prompts, n_gens=None)`` on one testbed; ``rows`` holds every row scored, in order."""

    def __init__(self, cfg, backend, evaluator: Evaluator):
        self.cfg, self.backend, self.evaluator = cfg, backend, evaluator
        self.rows: list[MethodRow] = []

    def __call__(self, method, prompts, n_gens: int | None = None, lowpass: bool = False) -> MethodRun:
        """The method's run; ``lowpass`` also puts the low-pass Gu ratio per prompt on its row (for ``paired``)."""
        run = run_method(self.backend, method, prompts, self.evaluator, self.cfg.generation_config(n_gens),
                         chunk=self.cfg.chunk, progress=self.cfg.progress)
        return self._keep(run, prompts, lowpass)

    def content_reference(self, prompts) -> MethodRun:
        """Plain CFG on each memorized prompt's content caption: the chance level of nearest-is-planted."""
        run = run_content_reference(self.backend, prompts, self.evaluator, self.cfg.generation_config(),
                                    chunk=self.cfg.chunk, progress=self.cfg.progress)
        return self._keep(run, [p for p in prompts if p.memorized], False)

    def _keep(self, run: MethodRun, prompts, lowpass: bool) -> MethodRun:
        if lowpass:
            run.row.per_prompt["lowpass"] = lowpass_per_prompt(self.evaluator.data, prompts, run.images)
        self.rows.append(run.row)
        return run

    def amg(self, name: str, index, threshold, settings, **setup) -> "Method":   # noqa: F821
        """AMG over this testbed's training set (``index``, captions) at ``settings`` and ``threshold``."""
        return amg_method(AMGSetup(index, threshold, settings, self.evaluator.data.captions, **setup), name=name)
