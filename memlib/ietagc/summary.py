"""What notebook 06 writes to ``metrics.json`` (IET-AGC, Liu et al., ECCV 2024; IET-AGC+, Guan et al., arXiv
2502.09434), from a study result: the headline comparison (full method against the baseline, every seed) in the
three privacy columns with paired intervals (``privacy``), each component's step, the frontier test (on the
memorization score and, where the probes recorded it, on the copy rate), rounds, AGC's premise during training,
where the skips fell and TAA's work. Counts and scores only: wall-clock seconds never enter it."""
from __future__ import annotations

import numpy as np

from . import report
from .frontier import frontier_mem_at, pareto, probe_mem
from .privacy import paired, relative_change
from .seedlevel import seed_level

# what each run's row keeps of its final model's scores
KEYS = ("mem_score", "mem_score_ci", "mq_counts", "mq_ratio_median", "gu_replication", "gu_replication_ci",
        "planted_replication", "nn_is_planted", "copy_rate", "copy_rate_ci", "lowpass_replication", "frechet",
        "frechet_floor", "farther_than_real_share", "farther_than_real_share_ci", "ratio_above_real_share",
        "d1_quantiles", "ratio_quantiles")
# what the real held-out digits' reference row keeps (the floor of (a) and (b), the chance level of (c))
REFERENCE_KEYS = ("copy_rate", "copy_rate_ci", "gu_replication", "gu_replication_ci", "nn_is_planted",
                  "lowpass_replication")
# the privacy columns a training probe records (None where a run's probes did not)
PROBE_PRIVACY = ("copy_rate", "nn_is_planted", "lowpass_replication")


def _final(progress: dict) -> dict:
    return progress[max(progress)] if progress else {}


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def metrics(res) -> dict:
    ev, specs, tau = res.eval, res.specs, res.mem_threshold
    kinds = res.kinds()
    mb = [ev[n]["mem_score"] for n in kinds["baseline"]]
    mf = [ev[n]["mem_score"] for n in kinds["full"]]
    fb = [ev[n]["frechet"] for n in kinds["baseline"]]
    ff = [ev[n]["frechet"] for n in kinds["full"]]
    m = {"mem_score_baseline": float(np.mean(mb)), "mem_score_baseline_seeds": mb,
         "mem_score_full": float(np.mean(mf)), "mem_score_full_seeds": mf,
         "fd_baseline": float(np.mean(fb)), "fd_baseline_seeds": fb, "fd_full": float(np.mean(ff)), "fd_full_seeds": ff,
         "mem_reduction": 1 - float(np.mean(mf)) / float(np.mean(mb)) if np.mean(mb) > 0 else float("nan"),
         "fd_change": float(np.mean(ff)) / float(np.mean(fb)) - 1,
         "n_eval_samples": ev[kinds["baseline"][0]]["n"], "folders": res.folders,
         "mem_threshold": tau, "mem_score_heldout_real": res.heldout_real["mem_score"],
         "mq_counts_heldout_real": res.heldout_real["mq_counts"], "n_heldout_real": res.heldout_real["n"],
         "frechet_floor": res.frechet_floor}
    if "underfit" in res.heldout_real:    # the under-fitting check's reference: real held-out digits
        m["underfit_heldout_real"] = res.heldout_real["underfit"]
    for k in ("gu_replication", "planted_replication"):
        m[f"{k}_baseline"] = float(np.mean([ev[n][k] for n in kinds["baseline"]]))
        m[f"{k}_full"] = float(np.mean([ev[n][k] for n in kinds["full"]]))
    comps = {}
    for kind, runs in kinds.items():
        for n in runs:
            last = _final(res.progress[n])
            comps[n] = {"label": report.LABELS[kind], **{k: ev[n][k] for k in KEYS if k in ev[n]},
                        "mem_score_at_one_third": ev[n]["mq_counts"]["0.333"] / ev[n]["n"],
                        "probe_visits": last.get("probe_visits"), "taa_visits": last.get("taa_visits", 0)}
    m["components"] = comps
    first = {k: v[0] for k, v in kinds.items() if v}
    order = [first[k] for k in ("baseline", "iet", "agc", "msr", "full") if k in first]
    if "iet" in first and "full" in first and "baseline" in first:
        drop = ev[first["baseline"]]["mem_score"] - ev[first["full"]]["mem_score"]
        m["iet_share_of_reduction"] = (ev[first["baseline"]]["mem_score"] - ev[first["iet"]]["mem_score"]) / drop \
            if drop > 0 else float("nan")
    m["component_steps"] = [{"from": a, "to": b, "mem_score_change": ev[b]["mem_score"] - ev[a]["mem_score"],
                             "frechet_change": ev[b]["frechet"] - ev[a]["frechet"],
                             "copy_rate_change": ev[b]["copy_rate"] - ev[a]["copy_rate"],
                             "paired": paired([res.columns[a]], [res.columns[b]], res.seed)}
                            for a, b in zip(order, order[1:])]
    m.update(_privacy(res, kinds))
    m.update(_frontier(res, kinds))
    if kinds.get("annealed"):
        m["annealed_frontier"] = _annealed_frontier(res, kinds)
    levels = seed_level(res.columns, kinds, res.seed)
    if levels is not None:
        m["seed_level"] = levels
    m["rounds"] = {n: [{"round": v["round"], "visits": v["probe_visits"], "mem_score": probe_mem(v, tau, _n(res, n)),
                        "frechet": v["frechet"], "gu_replication": v["gu_replication"],
                        "planted_replication": v["planted_replication"],
                        "skips_share_planted": v["skips_share_planted"], **{k: v.get(k) for k in PROBE_PRIVACY}}
                       for v in res.progress[n].values()]
                   for n in kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]}
    m["premise_during_training"] = {n: {str(v["step"]): v["premise"] for v in res.progress[n].values()}
                                    for n in kinds["baseline"]}
    m["premise_by_round"] = {n: {str(v["round"]): v["premise"] for v in res.progress[n].values()}
                             for n in kinds["iet"][:1] + kinds["full"][:1]}
    m["skips"] = {n: {k: _final(res.progress[n])[k] for k in ("skips_total", "skips_per_planted_row",
                                                               "skips_per_ordinary_row", "skips_share_planted")}
                  for n in kinds["agc"] + kinds["msr"] + kinds["full"]}
    finals = {n: _final(res.progress[n]) for n in kinds["full"]}
    m["taa"] = {n: {"extra_steps": int(sum(f["taa_steps"])), "extra_visits": f["taa_visits"],
                    "mean_magnitude": f["taa_mean_magnitude"]} for n, f in finals.items()}
    m["loss_vs_threshold"] = {}
    for t, thr in res.thresholds.items():
        full = res.losses[kinds["full"][0]][t]
        m["loss_vs_threshold"][str(t)] = {
            "threshold": thr, "planted_mean": float(np.mean(full["planted"])),
            "ordinary_mean": float(np.mean(full["ordinary"])),
            "planted_below": float(np.mean(np.array(full["planted"]) < thr["mean"])),
            "ordinary_below": float(np.mean(np.array(full["ordinary"]) < thr["mean"]))}
    m["acceptance"] = {"mem_reduction_at_least_0.40": bool(m["mem_reduction"] >= 0.40),
                       "fd_change_at_most_0.15": bool(m["fd_change"] <= 0.15),
                       "full_below_frontier": bool(m["below_frontier_share"] == 1.0)}
    m["acceptance"]["met"] = all(m["acceptance"].values())
    if getattr(res, "made_by_other_code", None):   # runs used as they are, though their training code changed
        m["runs_made_by_other_code"] = res.made_by_other_code
    return m


def _n(res, run: str) -> int:
    return res.specs[run]["probe"]["n_samples"]


def _privacy(res, kinds: dict) -> dict:
    """The copy rate and nearest-is-planted beside the memorization score: per-seed means, the real held-out
    digits' floor and chance level, the copy detector's record, and paired differences (``privacy.paired``)."""
    ev, cols, held = res.eval, res.columns, res.heldout_real
    out = {}
    for k in ("copy_rate", "nn_is_planted", "lowpass_replication"):
        for kind in ("baseline", "full"):
            out[f"{k}_{kind}"] = _mean([ev[n][k] for n in kinds[kind]])
    out["copy_rate_baseline_seeds"] = [ev[n]["copy_rate"] for n in kinds["baseline"]]
    out["copy_rate_full_seeds"] = [ev[n]["copy_rate"] for n in kinds["full"]]
    for k in REFERENCE_KEYS:
        out[f"{k}_heldout_real"] = held[k]
    out["copy_detector"] = res.detector
    base, full = [cols[n] for n in kinds["baseline"]], [cols[n] for n in kinds["full"]]
    pairs = {"full_vs_baseline": paired(base, full, res.seed)}
    for kind in ("iet", "agc", "msr"):
        if kinds[kind]:
            pairs[f"{kind}_vs_baseline"] = paired(base[:1], [cols[kinds[kind][0]]], res.seed)
    if kinds["bigbatch"] and kinds["iet"]:
        pairs["iet_vs_bigbatch"] = paired([cols[kinds["bigbatch"][0]]], [cols[kinds["iet"][0]]], res.seed)
    out["paired"] = pairs
    copy = pairs["full_vs_baseline"]["copy_rate"]
    out["copy_rate_change"] = copy["estimate"] if copy else float("nan")
    out["copy_rate_change_ci95"] = copy["ci95"] if copy else None
    for column, key in (("mem_score", "mem_reduction"), ("copy_rate", "copy_rate_reduction")):
        rel = relative_change(base, full, column, res.seed)       # a reduction is minus the relative change
        out[f"{key}_ci95"] = [-rel["ci95"][1], -rel["ci95"][0]] if rel else None
        if column == "copy_rate":
            out[key] = -rel["estimate"] if rel else float("nan")
    return out


def _frontier(res, kinds: dict) -> dict:
    """The baseline's memorization-fidelity frontier from its probes (every checkpoint of every seed and the long
    run, same probe seeds as the rounds), each IET run's last round against it, and the K x batch control; the
    same on the copy rate where every probe recorded it."""
    ev, tau = res.eval, res.mem_threshold

    def point(n, v):
        return {"run": n, "step": v["step"], "visits": v["probe_visits"], "mem_score": probe_mem(v, tau, _n(res, n)),
                "frechet": v["frechet"], "gu_replication": v["gu_replication"],
                **{k: v.get(k) for k in PROBE_PRIVACY}}

    points = [point(n, v) for n in kinds["baseline"] + kinds["long"] for v in res.progress[n].values()]
    front = pareto(points)
    copy_front = pareto(points, "copy_rate") if all(p["copy_rate"] is not None for p in points) else []
    out = {"frontier_points": points, "frontier": [p["run"] + f"@{p['step']}" for p in front],
           "frontier_copy": [p["run"] + f"@{p['step']}" for p in copy_front]}
    below = {}
    for n in kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]:
        last = _final(res.progress[n])
        at = frontier_mem_at(last["frechet"], front)
        mem = probe_mem(last, tau, _n(res, n))
        copy = last.get("copy_rate")
        copy_at = frontier_mem_at(last["frechet"], copy_front, "copy_rate") if copy_front else None
        below[n] = {"probe_mem_score": mem, "probe_frechet": last["frechet"], "frontier_mem_score": at,
                    "below": bool(mem < at), "probe_copy_rate": copy, "frontier_copy_rate": copy_at,
                    "below_copy": None if copy is None or copy_at is None else bool(copy < copy_at)}
    out["frontier_test"] = below
    # the control for IET itself: as many sequential optimizer steps as a proxy, on all rows, at the same visits
    out["control_points"] = [point(n, v) for n in kinds["bigbatch"] for v in res.progress[n].values()]
    if kinds["bigbatch"] and kinds["iet"]:
        b, i = kinds["bigbatch"][0], kinds["iet"][0]
        ctl = out["control_points"][-1]
        out["iet_vs_bigbatch"] = {"iet_mem_score": ev[i]["mem_score"], "bigbatch_mem_score": ev[b]["mem_score"],
                                  "iet_frechet": ev[i]["frechet"], "bigbatch_frechet": ev[b]["frechet"],
                                  "iet_copy_rate": ev[i]["copy_rate"], "bigbatch_copy_rate": ev[b]["copy_rate"],
                                  "bigbatch_below_frontier": bool(ctl["mem_score"]
                                                                  < frontier_mem_at(ctl["frechet"], front))}
    out["below_frontier_share"] = float(np.mean([below[n]["below"] for n in kinds["full"]]))
    copies = [below[n]["below_copy"] for n in kinds["full"]]
    out["below_copy_frontier_share"] = float(np.mean(copies)) if None not in copies else None
    return out


def _annealed_frontier(res, kinds: dict) -> dict:
    """The baseline's frontier from final models only, each annealed to completion at its own budget (the
    smaller-budget baselines, every baseline seed, the long run), scored on the test seeds like every IET run's
    final model; each IET run against it on the memorization score and on the copy rate."""
    ev = res.eval
    points = [{"run": n, "mem_score": ev[n]["mem_score"], "copy_rate": ev[n]["copy_rate"], "frechet": ev[n]["frechet"]}
              for n in kinds["annealed"] + kinds["baseline"] + kinds["long"]]
    front, copy_front = pareto(points), pareto(points, "copy_rate")
    test = {}
    for n in kinds["iet"] + kinds["agc"] + kinds["msr"] + kinds["full"]:
        fd, mem, copy = ev[n]["frechet"], ev[n]["mem_score"], ev[n]["copy_rate"]
        at, copy_at = frontier_mem_at(fd, front), frontier_mem_at(fd, copy_front, "copy_rate")
        test[n] = {"frechet": fd, "mem_score": mem, "frontier_mem_score": at, "below": bool(mem < at),
                   "copy_rate": copy, "frontier_copy_rate": copy_at, "below_copy": bool(copy < copy_at)}
    full = [test[n] for n in kinds["full"]]
    return {"points": points, "frontier": [p["run"] for p in front], "frontier_copy": [p["run"] for p in copy_front],
            "test": test, "below_share_full": float(np.mean([t["below"] for t in full])),
            "below_copy_share_full": float(np.mean([t["below_copy"] for t in full]))}
