"""Notebook 01's report (Wen et al., ICLR 2024, Sec. 3.1): the README rows, the tables and numbers of its results
block, and the papers' claims as measured, all from the metrics dict alone (``memlib results`` rebuilds them from
the committed ``figures/01_detection/metrics.json``). The block's sentences live in
``docs/templates/01_detection.md``."""
from __future__ import annotations

import math
import re

import numpy as np

from ..claims import Claim, verdict

AUC_BAR = 0.95   # the bar this project sets Wen's first-step detector, on every testbed seed
# Verma et al.: Wen's detector (first step, one generation) on Stable Diffusion v1.4 per negative source,
# (AUC, TPR@1%FPR); the testbed's trained-but-not-memorized captions play LAION's part
VERMA_SD14 = {"generic": (0.967, 0.740), "random": (1.000, 0.998)}
TPR_NAME = {"tpr_at_1fpr": "TPR@1%FPR", "tpr_at_zero_fp": "TPR at zero FP"}
NAN = float("nan")

# The README's results table (``memlib results``): (metric key, what it is, target)
HEADLINES = [
    ("auc_first_step_1gen", "Wen AUC, first step, 1 generation, memorized vs held-out (test half, mean over seeds)",
     f">= {AUC_BAR}"),
    ("tpr1fpr_first_step_1gen", "Wen TPR@1%FPR, first step, 1 generation, vs held-out", "report"),
    ("vs_generic_auc_first_step_1gen", "... AUC vs trained-but-not-memorized captions",
     f"Verma LAION: {VERMA_SD14['generic'][0]:.3f}"),
    ("vs_generic_tpr1fpr_first_step_1gen", "... TPR@1%FPR vs trained-but-not-memorized captions",
     f"Verma LAION: {VERMA_SD14['generic'][1]:.3f}"),
    ("vs_random_auc_first_step_1gen", "... AUC vs random tokens", f"Verma random: {VERMA_SD14['random'][0]:.3f}"),
    ("auc_all_steps_4gen", "Wen AUC, all steps, 4 generations (Wen's notebook setting), vs held-out", "report"),
    ("baseline_auc", "Carlini tiled-l2 baseline AUC (4 generations), vs held-out", "report"),
    ("min_seed_auc_first_step_1gen", "lowest seed's first-step AUC vs held-out (test half)", f">= {AUC_BAR}"),
]


def _ci(v: float, ci: list) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def seed_table(m: dict) -> str:
    """First step, one generation, per negative source and testbed seed, and the mean over seeds (test half)."""
    rows = ["| negatives (test half) | testbed seed | AUC [95 % CI] | TPR [95 % CI] | statistic | #pos / #neg |",
            "|---|---|---|---|---|---|"]
    hard = m["hard_negatives"]
    for src in m["per_seed"][str(m["testbed_seeds"][0])]:
        if not src.startswith("vs_"):
            continue
        neg = src[3:]
        for seed in m["testbed_seeds"]:
            c = m["per_seed"][str(seed)][src]
            rows.append(f"| {neg} | {seed} | {_ci(c['auc_first_step_1gen'], c['auc_first_step_1gen_ci95'])} | "
                        f"{_ci(c['tpr1fpr_first_step_1gen'], c['tpr1fpr_first_step_1gen_ci95'])} | "
                        f"{c['tpr_statistic']} | {c['n_pos']} / {c['n_neg']} |")
        pre = "" if neg == hard else f"vs_{neg}_"
        rows.append(f"| {neg} | **mean of {m['n_testbed_seeds']}** | "
                    f"{_ci(m[pre + 'auc_first_step_1gen'], m[pre + 'auc_first_step_1gen_ci95'])} | "
                    f"{_ci(m[pre + 'tpr1fpr_first_step_1gen'], m[pre + 'tpr1fpr_first_step_1gen_ci95'])} | "
                    f"{m[pre + 'tpr_statistic_first_step_1gen']} | |")
    return "\n".join(rows)


def replication_table(m: dict) -> str:
    """Notebook 00's headline on every seed, as notebook 01 measures it: the share of generations that copy, and
    the planted groups taken as positives. Empty for a real model (no training set to search)."""
    seeds = [str(s) for s in m["testbed_seeds"]]
    sets = list(dict.fromkeys(g for s in seeds for g in m["per_seed"][s].get("replication", {})))
    if not sets:
        return ""
    rows = ["| testbed seed | " + " | ".join(f"{g} copies" for g in sets) + " | positives |",
            "|---" * (len(sets) + 2) + "|"]
    for s in seeds:
        ps = m["per_seed"][s]
        rows.append(f"| {s} | " + " | ".join(f"{ps['replication'][g]:.3f}" if g in ps["replication"] else ""
                                            for g in sets) + f" | {', '.join(ps['positives'])} |")
    return "\n".join(rows)


def group_rows(m: dict) -> dict[str, dict]:
    """Each positive group alone against the hard negatives (first step, one generation, test half): AUC and TPR
    as the mean over seeds, and the TPR's range across seeds."""
    groups: dict[str, list[dict]] = {}
    for r in m["table"]:
        if (r["half"], r["negatives"], r["steps"], r["gens"]) == ("test", m["hard_negatives"], "first", 1) and \
                r["positives"] != "pooled":
            groups.setdefault(r["positives"], []).append(r)
    out = {}
    for g, rows in groups.items():
        tpr = [r["tpr_at_1fpr"] for r in rows]
        out[g] = {"auc": float(np.mean([r["auc"] for r in rows])), "tpr": float(np.mean(tpr)),
                  "tpr_seed_range": [min(tpr), max(tpr)], "tpr_statistic": rows[0]["tpr_statistic"],
                  "n_seeds": len(rows)}
    return out


def group_table(m: dict) -> str:
    """``group_rows`` as a Markdown table (empty with a single positive group)."""
    rows = group_rows(m)
    if not rows:
        return ""
    out = [f"| positives alone vs {m['hard_negatives']} (first step, one generation, test half) | "
           f"AUC (mean of {m['n_testbed_seeds']} seeds) | TPR (mean) | statistic | TPR across seeds |",
           "|---|---|---|---|---|"]
    out += [f"| {g} | {r['auc']:.3f} | {r['tpr']:.3f} | {TPR_NAME[r['tpr_statistic']]} | "
            f"{r['tpr_seed_range'][0]:.3f} to {r['tpr_seed_range'][1]:.3f} |" for g, r in rows.items()]
    return "\n".join(out)


def _tpr_names(m: dict) -> dict[str, str]:
    """Readable name of the TPR statistic per pooled setting: 'vs_generic_first_step_1gen' -> 'TPR@1%FPR'."""
    out = {}
    for key, stat in m.items():
        found = re.fullmatch(r"(vs_\w+?_)?tpr_statistic_(\w+)", key)
        if found and isinstance(stat, str):
            out[(found.group(1) or "") + found.group(2)] = TPR_NAME[stat]
    return out


def values(m: dict) -> dict:
    """The tables and derived numbers of the results block (``docs/templates/01_detection.md``), from metrics
    alone; ``*_all_steps_g*`` name Wen's notebook setting (all steps, ``max_gens`` generations)."""
    tail = f"all_steps_{m['max_gens']}gen"
    names = _tpr_names(m)
    verma = {f"verma_{src}_{stat}": v for src, (auc, tpr) in VERMA_SD14.items()
             for stat, v in (("auc", auc), ("tpr", tpr))}
    return {"seed_table": seed_table(m), "replication_table": replication_table(m), "group_table": group_table(m),
            "tpr_name": names, "auc_bar": AUC_BAR, **verma,
            "auc_all_steps_g": m.get(f"auc_{tail}", NAN), "auc_all_steps_g_ci95": m.get(f"auc_{tail}_ci95", [NAN] * 2),
            "tpr1fpr_all_steps_g": m.get(f"tpr1fpr_{tail}", NAN),
            "tpr1fpr_all_steps_g_ci95": m.get(f"tpr1fpr_{tail}_ci95", [NAN] * 2),
            "tpr_name_all_steps_g": names.get(tail, "TPR")}


def claims(m: dict) -> list[Claim]:
    """The papers' claims as notebook 01 measured them (test halves; first step and one generation unless named)."""
    hard, g = m["hard_negatives"], m["max_gens"]
    first, all_steps = m["auc_first_step_1gen"], m.get(f"auc_all_steps_{g}gen", NAN)
    per_seed = {str(s): m["per_seed"][str(s)][f"vs_{hard}"]["auc_first_step_1gen"] for s in m["testbed_seeds"]}
    generic, random = m.get("vs_generic_auc_first_step_1gen", NAN), m.get("vs_random_auc_first_step_1gen", NAN)
    groups = {name: r["auc"] for name, r in group_rows(m).items()}
    return [
        Claim("auc_bar_every_seed", f"Wen's first step with one generation separates memorized from {hard} prompts "
              f"with AUC >= {AUC_BAR} on every testbed seed",
              verdict(m["min_seed_auc_first_step_1gen"] >= AUC_BAR),
              {"auc_mean": first, "auc_mean_ci95": m["auc_first_step_1gen_ci95"], "auc_per_seed": per_seed,
               "bar": AUC_BAR}),
        Claim("all_steps_at_least_first_step", f"Wen's notebook setting, the paper's best (all steps, {g} "
              "generations), detects at least as well as the first step with one generation",
              verdict(all_steps >= first, measured=math.isfinite(all_steps)),
              {f"auc_all_steps_{g}gen": all_steps, "auc_first_step_1gen": first}),
        Claim("beats_tiled_l2", f"Wen's first step beats Carlini et al.'s tiled-l2 test on {g} full generations, as "
              "the paper reports",
              verdict(first >= m["baseline_auc"]), {"auc_first_step_1gen": first, "baseline_auc": m["baseline_auc"]}),
        Claim("generic_harder_than_random", "Trained-but-not-memorized captions are harder negatives than random "
              "tokens (Verma et al., Wen's detector on Stable Diffusion v1.4)",
              verdict(generic < random, measured=math.isfinite(generic) and math.isfinite(random)),
              {"auc_vs_generic": generic, "auc_vs_random": random,
               "verma_sd14_auc_tpr": {src: list(v) for src, v in VERMA_SD14.items()}}),
        Claim("every_group_meets_bar", f"Each planted group alone reaches AUC >= {AUC_BAR} against {hard} prompts "
              "(mean over seeds)", verdict(all(a >= AUC_BAR for a in groups.values()), measured=bool(groups)),
              {"auc_per_group": groups, "bar": AUC_BAR}),
    ]
