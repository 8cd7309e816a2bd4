"""An ipywidgets explorer for notebook 02: type a prompt, see its magnitude curve, token bars and samples.

Only for live kernels; figures never depend on it (papermill cannot move a widget).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from ..backends import make_backend


def explorer(cfg):
    import ipywidgets as w

    from .attribution import token_significance
    from ..generation import generate

    backend = make_backend(cfg.backend, cfg.testbed, seed=cfg.seed)
    text = w.Text(value="large red circle at the top left", description="prompt", layout=w.Layout(width="60%"))
    button = w.Button(description="explain")
    out = w.Output()

    def run(_):
        out.clear_output()
        with out:
            if not text.value.strip():
                print("type a prompt first")
                return
            gen_cfg = cfg.generation_config()
            g = generate(backend, [text.value], gen_cfg, progress=False)
            a = token_significance(backend, text.value, gen_cfg, cfg.steps())
            fig, axes = plt.subplots(1, 2 + gen_cfg.n_gens, figsize=(3 * (2 + gen_cfg.n_gens), 2.8))
            axes[0].plot(g.text_norm[0].T, alpha=0.6)
            axes[0].set(title="‖ε_c − ε_u‖ per step", xlabel="step")
            axes[1].bar(range(len(a.tokens)), a.significance)
            axes[1].set_xticks(range(len(a.tokens)), a.tokens, rotation=70, fontsize=7)
            axes[1].set_title("token significance")
            for ax, img in zip(axes[2:], g.images[0]):
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.axis("off")
            plt.show()

    button.on_click(run)
    return w.VBox([w.HBox([text, button]), out])
