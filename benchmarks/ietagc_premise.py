"""AGC's premise on the shipped unconditional digits DDPM (the model of notebook 04; IET-AGC, Liu et al. 2024):
do planted duplicates have lower denoising loss than ordinary training digits at the same timestep? Writes
benchmarks/results/ietagc_premise.json.

    .venv/bin/python benchmarks/ietagc_premise.py
"""
from __future__ import annotations

import json

from memlib.ietagc.premise import loss_premise
from memlib.paths import repo_root
from memlib.provenance import device_info
from memlib.testbed.digits import DigitsDataConfig, load_digits_model, make_digits_data


def main() -> None:
    unet, _, meta = load_digits_model(class_conditional=False, progress=False)
    res = loss_premise(unet, make_digits_data(DigitsDataConfig()))
    res.update(checkpoint=meta["folder"], step=meta.get("step"), device=device_info(),
               note="final shipped weights only; the premise during training is checked in notebook 06")
    path = repo_root() / "benchmarks" / "results" / "ietagc_premise.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    for t, v in res["per_timestep"].items():
        print(f"t={t}: planted/ordinary loss {v['ratio']:.2f}, AUC {v['auc_planted_lower']:.2f}")


if __name__ == "__main__":
    main()
