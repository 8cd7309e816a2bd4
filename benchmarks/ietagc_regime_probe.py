"""The regime probe of notebook 06 (IET-AGC+; Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434): short grids of
baseline and IET-alone runs on a development training seed, scored against real held-out digits, and the regime
the fixed rule in ``memlib.ietagc.regime.choose`` picks. Runs are ordinary IET-AGC+ run folders
(``checkpoints/ietagc-*``, resumable); the record goes to benchmarks/results/ietagc_regime_probe.json.

    .venv/bin/python benchmarks/ietagc_regime_probe.py            # the default grid (about an hour on 2 cores)
    .venv/bin/python benchmarks/ietagc_regime_probe.py --copies 30 --shards 4 --rounds 10 --steps 200
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from memlib.ietagc.regime import RegimeProbeConfig, run_probe, write_record
from memlib.paths import repo_root
from memlib.provenance import device_info, git_commit


def main(argv: list[str] | None = None) -> int:
    defaults = RegimeProbeConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("steps", "copies", "shards", "rounds", "dev_seed", "ranks", "eval_samples"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                        default=getattr(defaults, name))
    ap.add_argument("--out", type=Path, default=None, help="the record (default: benchmarks/results/...)")
    args = vars(ap.parse_args(argv))
    out = args.pop("out") or repo_root() / "benchmarks" / "results" / "ietagc_regime_probe.json"
    cfg = RegimeProbeConfig(**args)
    start = time.perf_counter()
    record = run_probe(cfg)
    record.update(device=device_info(), git_commit=git_commit(), wall_s=round(time.perf_counter() - start, 1))
    write_record(record, out)
    real = record["real_heldout"]
    print(f"{'copies':>6} {'K':>3} {'R':>3} {'local':>5} | {'IET copy':>8} {'base copy':>9} {'real copy':>9} | "
          f"{'IET mem':>7} {'real mem':>8} | farther")
    for p in record["points"]:
        r = real[str(p["copies"])]
        print(f"{p['copies']:>6} {p['shards']:>3} {p['rounds']:>3} {p['local_steps']:>5} | "
              f"{p['iet']['copy_rate']:>8.3f} {p['baseline']['copy_rate']:>9.3f} {r['copy_rate']:>9.3f} | "
              f"{p['iet']['mem_score']:>7.3f} {r['mem_score']:>8.3f} | {p['iet']['farther_than_real_share']:.2f}")
    print(f"chosen: {record['chosen']['point']} ({record['chosen']['why']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
