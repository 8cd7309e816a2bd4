"""``memlib.explain``: which words of a prompt drive its memorization (Wen et al., ICLR 2024, Sec. 3.2).

    SS(i) = 1/|S| sum_{t in S} || d L_t(e) / d e^i ||_2,   L_t = || stack_j (eps(x_t^j, e) - eps(x_t^j, e_0)) ||_2

in Wen's setting by default: every one of the 50 DDIM steps, 4 generations, one norm over the n-image batch
(``memlib.wen.attribution.token_significance``). Writes a CSV table (token, significance, share, rank) and a bar
chart PNG.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..generation import GenerationConfig
from ..wen.attribution import TokenSignificance, token_significance
from .model_setup import default_guidance, open_model


@dataclass
class Explanation:
    result: TokenSignificance
    csv: Path | None = None
    png: Path | None = None

    @property
    def tokens(self) -> list[str]:
        return self.result.tokens

    @property
    def significance(self) -> np.ndarray:
        return self.result.significance

    def table(self) -> str:
        sig = self.significance
        share, rank = _share_and_rank(sig)
        lines = [f"magnitude L = {self.result.magnitude:.4f} (mean over the attributed steps)",
                 f"{'rank':>4}  {'significance':>12}  {'share':>6}  token"]
        lines += [f"{rank[i]:4d}  {sig[i]:12.5f}  {share[i]:6.1%}  {t}" for i, t in enumerate(self.tokens)]
        return "\n".join(lines)


def _share_and_rank(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each token's share of the total significance, and its rank (1 = most significant)."""
    share = sig / sig.sum() if sig.sum() > 0 else sig
    return share, np.argsort(np.argsort(-sig, kind="stable"), kind="stable") + 1


def _write(res: TokenSignificance, out: Path, model: str) -> tuple[Path, Path]:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    sig = res.significance
    share, rank = _share_and_rank(sig)
    table = out / "tokens.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["position", "token", "significance", "share", "rank"])
        for i, t in enumerate(res.tokens):
            w.writerow([i, t, f"{sig[i]:.6g}", f"{share[i]:.4f}", int(rank[i])])
    (out / "explain.json").write_text(json.dumps({"prompt": res.prompt, "model": model,
                                                  "magnitude": res.magnitude}, indent=1))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(res.tokens) + 1.5), 3.4))
    colours = ["C3" if r <= 2 else "C0" for r in rank]
    ax.bar(range(len(res.tokens)), sig, color=colours)
    ax.set_xticks(range(len(res.tokens)), res.tokens, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("significance ‖∂L/∂eⁱ‖ (mean over steps)")
    title = res.prompt if len(res.prompt) <= 70 else res.prompt[:67] + "..."
    ax.set_title(f"{title}\nred: the two most significant tokens", fontsize=9)
    fig.tight_layout()
    png = out / "tokens.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return table, png


def explain(prompt: str, model: str = "testbed", *, gens: int = 4, num_steps: int = 50, steps: int | None = None,
            guidance_scale: float | None = None, seed: int = 0, batch_loss: bool = True,
            out: str | Path | None = None, device: str | None = None, dtype: str | None = None,
            progress: bool = True, backend=None) -> Explanation:
    """Per-token significance of ``prompt``: averaged over the first ``steps`` sampling steps (None: all
    ``num_steps``, Wen's setting) of ``gens`` generations. With ``out`` (a folder): tokens.csv and tokens.png."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("explain needs a non-empty prompt: pass --prompt \"...\"")
    for name, v in (("gens", gens), ("num_steps", num_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} = {v!r}: give an integer >= 1")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps):
        raise ValueError(f"steps = {steps!r}: give an integer in 1..{num_steps} (or leave it out: all steps)")
    if out is not None:    # before any model loads: a bad folder fails in a second, not after the gradients
        out = Path(out).expanduser()
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for tokens.csv and tokens.png")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {out} cannot be created ({e.strerror}); give a writable folder") from None
    backend = backend or open_model(model, device, dtype, progress)
    gen_cfg = GenerationConfig(num_steps=num_steps, n_gens=gens, seed=seed, batch_size=max(gens, 1),
                               guidance_scale=default_guidance(backend) if guidance_scale is None else guidance_scale)
    res = token_significance(backend, prompt, gen_cfg, list(range(steps or num_steps)), batch_loss=batch_loss)
    exp = Explanation(res)
    if out is not None:
        exp.csv, exp.png = _write(res, out, model)
    return exp
