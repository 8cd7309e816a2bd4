"""Notebook 05 on a further testbed seed (its own data and UNet; PRSS, Chen et al., CVPR 2025), kept lean:
no mitigation, the content-caption reference (the chance level of nearest-is-planted), the main testbed's
dev-chosen operating points applied unchanged (lambda, tau_t and M_t: the transfer), and PRSS's own operating
point chosen on this seed's dev half after calibrating lambda, tau_t and M_t there. Every row is scored with
this seed's own copy detector and compared with no mitigation on the same prompts and noises."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..mitigate.columns import MethodRow
from ..mitigate.evalset import cap_heldout, evaluation_prompts
from ..mitigate.registry import make_method
from ..mitigate.run import open_testbed, run_content_reference, run_method
from .curves import OWN_ON_MORE_SEEDS, calibrate, curve_method, dev_operating
from .paired import summary, vs_none
from .results import OWN, TRANSFER


@dataclass
class SeedRun:
    seed: int
    checkpoint: str
    lambdas: list                     # this seed's own lambda sweep (dev half)
    operating: dict                   # curve -> own operating lambda
    transfer: dict                    # curve -> the main seed's operating lambda, applied here
    rows: dict                        # label -> MethodRow (test half): 'none', '<curve>, <TRANSFER|OWN>'
    content: MethodRow                # the content-caption reference (memorized test prompts)
    dev_rows: dict = field(default_factory=dict)   # curve -> [MethodRow] per own lambda (dev half)

    def to_metrics(self) -> dict:
        none = self.rows["none"]
        return {"checkpoint": self.checkpoint, "lambdas": self.lambdas, "operating": self.operating,
                "transfer": self.transfer, "nn_chance": self.content.nn_is_planted.get("memorized"),
                "content_caption": self.content.to_metrics(),
                "rows": {label: r.to_metrics() for label, r in self.rows.items()},
                "points": {label: dict(summary(r), vs_none=vs_none(none, r))
                           for label, r in self.rows.items() if label != "none"},
                "dev_rows": {c: [r.to_metrics() for r in rows] for c, rows in self.dev_rows.items()}}

    def all_rows(self) -> list[MethodRow]:
        return [*self.rows.values(), self.content, *(r for rows in self.dev_rows.values() for r in rows)]


def run_seed(cfg, seed: int, specs, transfer: dict, gen) -> SeedRun:
    """Testbed ``seed`` (``cfg.testbed`` with that seed): ``transfer`` maps each curve to (lambda, tau, M) as
    the main seed chose and calibrated them; ``specs`` lists (curve, variant) of the curves traced."""
    ref = replace(cfg.testbed, seed=seed)
    tb, backend, evaluator = open_testbed(ref, cfg)
    dev, test = (cap_heldout(evaluation_prompts(tb.data, half, max_per_group=cfg.max_prompts_per_group),
                             cfg.heldout_prompts) for half in ("dev", "test"))

    def run(method, prompts, n_gens=None):
        return run_method(backend, method, prompts, evaluator, cfg.generation_config(n_gens), chunk=cfg.chunk,
                          progress=cfg.progress)

    variants = dict(specs)
    rows = {"none": run(make_method("none"), test).row}
    for curve, (lam, tau, M) in transfer.items():
        rows[f"{curve}, {TRANSFER}"] = run(curve_method(curve, variants[curve], lam, tau, M, cfg.source), test).row
    lambdas, tau, M, _ = calibrate(backend, dev, gen, cfg)
    own = [(c, v) for c, v in specs if c in OWN_ON_MORE_SEEDS]
    dev_rows, operating = dev_operating(run, own, dev, lambdas, tau, M, cfg, which=OWN_ON_MORE_SEEDS)
    for curve, lam in operating.items():
        rows[f"{curve}, {OWN}"] = run(curve_method(curve, variants[curve], lam, tau, M, cfg.source), test).row
    content = run_content_reference(backend, test, evaluator, gen, chunk=cfg.chunk, progress=cfg.progress).row
    return SeedRun(seed, tb.folder.name, list(lambdas), operating, {c: v[0] for c, v in transfer.items()}, rows,
                   content, dev_rows)
