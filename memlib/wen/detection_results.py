"""Notebook 01's results (Wen et al., ICLR 2024, Sec. 3.1): the detection table with bootstrap intervals per
testbed seed, pooled over seeds, and the best single sampling step.

Intervals: 95 % percentile bootstrap over prompts (positives and negatives resampled separately) within a seed.
Pooled over seeds: the mean of the seeds' values; its interval is the percentile interval of the mean of the
seeds' bootstrap replicates (sampling error within seeds), and the spread across seeds is given beside it.
With fewer than 100 negatives, "TPR at 1 % FPR" is really the TPR at zero false positives, and is named so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..claims import Claim
from ..metrics import bootstrap_mean, bootstrap_roc, percentile_interval, roc, tpr_statistic_name
from ..splits import split
from .scores import STEP_SETTINGS, wen_score

MAIN_NEGATIVES = "heldout"   # the hard negatives of the headline (the first negative set on a real backend)


def _settings(max_gens: int, n_steps: int) -> list[tuple[str, int]]:
    return [(s, g) for s, k in STEP_SETTINGS.items() if k is None or k <= n_steps for g in sorted({1, max_gens})]


def _halves(s, split_seed: int) -> dict[str, np.ndarray]:
    """Index arrays of a prompt set's dev and test halves (and 'all')."""
    idx = split(list(range(len(s.prompts))), lambda i: s.units[i], split_seed)
    return {"dev": np.array(idx["dev"], int), "test": np.array(idx["test"], int),
            "all": np.arange(len(s.prompts))}


def _row(pos: np.ndarray, neg: np.ndarray, n_boot: int, **labels) -> dict:
    b = bootstrap_roc(pos, neg, n_boot)
    return dict(labels, auc=b.auc, auc_ci95=list(b.auc_ci), tpr_at_1fpr=b.tpr, tpr_ci95=list(b.tpr_ci),
                tpr_statistic=b.tpr_name, n_pos=b.n_pos, n_neg=b.n_neg, _replicates=b.replicates)


def build_table(setup, text_norm: dict, baseline: dict, positives: list[str], max_gens: int, split_seed: int,
                n_boot: int) -> list[dict]:
    """Rows (half, positives, negatives, steps, gens) with AUC, TPR@1%FPR and their bootstrap intervals.
    Pooled positives in every setting; each positive group alone at the first step with one generation."""
    halves = {n: _halves(s, split_seed) for n, s in setup.sets.items()}
    rows = []
    for neg in setup.names("negative"):
        settings = _settings(max_gens, text_norm[neg].shape[2])
        for half in ("dev", "test"):
            ni = halves[neg][half]
            if not len(ni):
                continue
            for steps, g in settings:
                k = STEP_SETTINGS[steps]
                sc = {n: wen_score(text_norm[n], k, g) for n in positives + [neg]}
                pos = [sc[p][halves[p][half]] for p in positives]
                if sum(map(len, pos)):
                    rows.append(_row(np.concatenate(pos), sc[neg][ni], n_boot, half=half, positives="pooled",
                                     negatives=neg, steps=steps, gens=g))
                for p, ps in zip(positives, pos):
                    if (steps, g) == ("first", 1) and len(positives) > 1 and len(ps):
                        rows.append(_row(ps, sc[neg][ni], n_boot, half=half, positives=p, negatives=neg,
                                         steps=steps, gens=g))
            if neg in baseline and all(p in baseline for p in positives):
                pos = np.concatenate([baseline[p][halves[p][half]] for p in positives])
                if len(pos):
                    rows.append(_row(pos, baseline[neg][ni], n_boot, half=half, positives="pooled", negatives=neg,
                                     steps="baseline_tiled_l2", gens=max_gens))
    return rows


def dose_response(setup, text_norm: dict, replication: dict, split_seed: int, n_boot: int) -> list[dict]:
    """Per number of training copies: first-step score (1 generation) and replication, mean with intervals, and
    the AUC against the held-out test half. All dose prompts are used: nothing is chosen on them."""
    s = setup.sets["dose"]
    score = wen_score(text_norm["dose"], 1, 1)
    neg = setup.names("negative")[0]
    neg_score = wen_score(text_norm[neg], 1, 1)[_halves(setup.sets[neg], split_seed)["test"]]
    copies = np.array(s.copies)
    rows = []
    for c in sorted(set(s.copies)):
        sel = copies == c
        m, ci, _ = bootstrap_mean(score[sel], n_boot)
        row = dict(copies=int(c), n_prompts=int(sel.sum()), score_mean=m, score_ci95=list(ci),
                   auc_vs_heldout_test=bootstrap_roc(score[sel], neg_score, 10).auc)
        if "dose" in replication:
            r, rci, _ = bootstrap_mean(replication["dose"][sel], n_boot)
            row.update(replication_rate=r, replication_ci95=list(rci))
        rows.append(row)
    return rows


def best_single_step(s: "SeedDetection", negatives: str, split_seed: int) -> dict | None:
    """The one sampling step whose magnitude (mean over every recorded generation) best separates the pooled
    positives from ``negatives``: chosen by AUC on the development halves, reported on the test halves. None when
    a half lacks positives or negatives."""
    per_step = {n: tn.mean(axis=1) for n, tn in s.text_norm.items()}   # (P, T): mean over generations
    halves = {n: _halves(s.setup.sets[n], split_seed) for n in s.positives + [negatives]}
    pos = {h: np.concatenate([per_step[p][halves[p][h]] for p in s.positives]) for h in ("dev", "test")}
    neg = {h: per_step[negatives][halves[negatives][h]] for h in ("dev", "test")}
    if not all(len(pos[h]) and len(neg[h]) for h in ("dev", "test")):
        return None
    dev_auc = [roc(pos["dev"][:, t], neg["dev"][:, t]).auc for t in range(pos["dev"].shape[1])]
    step = max(range(len(dev_auc)), key=lambda t: dev_auc[t])   # the first step among ties
    r = roc(pos["test"][:, step], neg["test"][:, step])
    return {"step": step, "of": len(dev_auc), "dev_auc": dev_auc[step], "auc": r.auc, "tpr1fpr": r.tpr_at_1fpr,
            "tpr_statistic": tpr_statistic_name(len(neg["test"])), "seed": s.seed,
            "gens": s.text_norm[negatives].shape[1], "negatives": negatives}


@dataclass
class SeedDetection:
    """One testbed seed's (or one real model's) detection results."""
    seed: int
    setup: object
    positives: list[str]
    text_norm: dict[str, np.ndarray]         # set -> (P, G, T)
    baseline: dict[str, np.ndarray]          # set -> Carlini score (P,), full sets only
    replication: dict[str, float]            # planted set -> share of generations that copy
    table: list[dict]
    dose: list[dict]
    timings: dict
    max_gens: int

    def cell(self, steps: str, gens: int, negatives: str, half: str = "test", positives: str = "pooled") -> dict:
        for r in self.table:
            if (r["half"], r["positives"], r["negatives"], r["steps"], r["gens"]) == \
                    (half, positives, negatives, steps, gens):
                return r
        raise KeyError(f"no table row for {half} half, {positives} vs {negatives}, {steps} steps, {gens} gens")

    def scores(self, steps: str = "first", gens: int = 1) -> dict[str, np.ndarray]:
        """Wen scores of every set sampled far enough for ``steps`` (all steps: the fully sampled sets)."""
        k, full = STEP_SETTINGS[steps], max(tn.shape[2] for tn in self.text_norm.values())
        return {n: wen_score(tn, k, gens) for n, tn in self.text_norm.items() if tn.shape[2] >= (k or full)}


def _pool(cells: list[dict]) -> dict:
    """Mean over seeds with the interval of the mean of the seeds' bootstrap replicates, and the spread."""
    reps = np.mean([c["_replicates"] for c in cells], axis=0)
    out = {}
    for i, k in enumerate(("auc", "tpr_at_1fpr")):
        vals = [c[k] for c in cells]
        out[k] = float(np.mean(vals))
        out[f"{k}_ci95"] = list(percentile_interval(reps[:, i]))
        out[f"{k}_seed_range"] = [float(min(vals)), float(max(vals))]
    out["tpr_statistic"] = tpr_statistic_name(min(c["n_neg"] for c in cells))
    out["n_neg_per_seed"] = [c["n_neg"] for c in cells]
    out["n_pos_per_seed"] = [c["n_pos"] for c in cells]
    return out


@dataclass
class DetectionResult:
    """Every seed's ``SeedDetection`` (the first one's arrays draw the figures), the best single step on the
    first seed and a design check of the data: the first-step AUC an ideal denoiser built from the data would
    reach (no model; not a result, so not in the metrics)."""
    seeds: list[SeedDetection]
    notes: list[str] = field(default_factory=list)
    best_step: dict | None = None
    ideal_auc: float | None = None

    @property
    def main(self) -> SeedDetection:
        return self.seeds[0]

    def negatives(self) -> list[str]:
        return self.main.setup.names("negative")

    def hard_negatives(self) -> str:
        negs = self.negatives()
        return MAIN_NEGATIVES if MAIN_NEGATIVES in negs else negs[0]

    def pooled(self, steps: str, gens: int, negatives: str, half: str = "test") -> dict:
        return _pool([s.cell(steps, gens, negatives, half) for s in self.seeds])

    def claims(self) -> list[Claim]:
        """The papers' claims as this run measured them (``detection_report.claims`` on ``to_metrics()``)."""
        from .detection_report import claims

        return claims(self.to_metrics())

    def to_metrics(self) -> dict:
        negs, main_neg = self.negatives(), self.hard_negatives()
        g = self.main.max_gens
        m: dict = {"n_testbed_seeds": len(self.seeds), "testbed_seeds": [s.seed for s in self.seeds],
                   "hard_negatives": main_neg, "headline_half": "test", "max_gens": g,
                   "notes": self.notes + [n for s in self.seeds for n in s.setup.notes],
                   "n_prompts": {n: len(s.prompts) for n, s in self.main.setup.sets.items()}}

        def put(pre: str, steps: str, gens: int, neg: str) -> None:
            p, tail = self.pooled(steps, gens, neg), f"{_KEY[steps]}_{gens}gen"
            for stat, k in (("auc", "auc"), ("tpr1fpr", "tpr_at_1fpr")):
                m[f"{pre}{stat}_{tail}"] = p[k]
                m[f"{pre}{stat}_{tail}_ci95"], m[f"{pre}{stat}_{tail}_seed_range"] = p[f"{k}_ci95"], \
                    p[f"{k}_seed_range"]
            m[f"{pre}tpr_statistic_{tail}"], m[f"{pre}n_negatives_{tail}"] = p["tpr_statistic"], p["n_neg_per_seed"]

        for neg in negs:
            pre = "" if neg == main_neg else f"vs_{neg}_"
            for steps, gens in _settings(g, self.main.text_norm[neg].shape[2]):
                put(pre, steps, gens, neg)
        base = self.pooled("baseline_tiled_l2", g, main_neg)
        m.update(baseline_auc=base["auc"], baseline_auc_ci95=base["auc_ci95"], baseline_tpr1fpr=base["tpr_at_1fpr"],
                 baseline_tpr1fpr_ci95=base["tpr_at_1fpr_ci95"])
        firsts = [s.cell("first", 1, main_neg)["auc"] for s in self.seeds]
        m["min_seed_auc_first_step_1gen"] = float(min(firsts))
        m["per_seed"] = {str(s.seed): _seed_metrics(s, negs) for s in self.seeds}
        m["table"] = [{k: v for k, v in r.items() if not k.startswith("_")} | {"seed": s.seed}
                      for s in self.seeds for r in s.table]
        m["dose_response"] = {str(s.seed): s.dose for s in self.seeds}
        if self.best_step is not None:
            m.update({f"best_single_step_{k}": v for k, v in self.best_step.items() if k != "step"},
                     best_single_step=self.best_step["step"])
        return m


_KEY = {"first": "first_step", "first10": "first10_steps", "all": "all_steps"}


def _seed_metrics(s: SeedDetection, negs: list[str]) -> dict:
    out = {"positives": s.positives, "replication": s.replication}
    for neg in negs:
        c = s.cell("first", 1, neg)
        out[f"vs_{neg}"] = {"auc_first_step_1gen": c["auc"], "auc_first_step_1gen_ci95": c["auc_ci95"],
                            "tpr1fpr_first_step_1gen": c["tpr_at_1fpr"], "tpr1fpr_first_step_1gen_ci95": c["tpr_ci95"],
                            "tpr_statistic": c["tpr_statistic"], "n_pos": c["n_pos"], "n_neg": c["n_neg"]}
    return out
