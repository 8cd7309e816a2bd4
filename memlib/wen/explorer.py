"""An ipywidgets explorer (notebook 02, ``make lab``): type a prompt, see Wen et al.'s text-conditional magnitude
per sampling step (ICLR 2024, Sec. 3.1), the per-token significance (Sec. 3.2) and the generations, each beside
its nearest training image with the Gu ratio d1/d2 (testbed only: a real model brings no training set).

Only for live kernels; figures never depend on it (papermill cannot move a widget, so notebooks gate it behind
``interactive = False``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from ..backends import make_backend

EXAMPLE_PROMPT = "large red circle at the top left"


def explorer_figure(backend, prompt: str, gen_cfg, steps: list[int]):
    """The explorer's figure for one prompt: magnitude per step, token bars, generations (with their nearest
    training images on the testbed)."""
    from ..generation import generate
    from ..metrics import GU_RATIO_THRESHOLD, ReplicationIndex
    from .attribution import token_significance

    g = generate(backend, [prompt], gen_cfg, progress=False)
    a = token_significance(backend, prompt, gen_cfg, steps)
    data = getattr(getattr(backend, "testbed", None), "data", None)
    n = gen_cfg.n_gens
    rows = 2 if data is not None else 1
    fig = plt.figure(figsize=(3.1 * (2 + n), 2.9 * rows))
    grid = fig.add_gridspec(rows, 2 + n)
    ax = fig.add_subplot(grid[:, 0])
    ax.plot(g.text_norm[0].T, alpha=0.7)
    ax.set(title="‖ε(x_t, e_p) − ε(x_t, e_∅)‖ per step", xlabel="sampling step", ylabel="magnitude")
    ax = fig.add_subplot(grid[:, 1])
    ax.bar(range(len(a.tokens)), a.significance)
    ax.set_xticks(range(len(a.tokens)), a.tokens, rotation=70, fontsize=7)
    ax.set_title(f"token significance ({len(steps)} steps)")
    near = None
    if data is not None:
        near = ReplicationIndex(data.images, data.cluster).query(g.images[0] * 2 - 1)
    for j, img in enumerate(g.images[0]):
        ax = fig.add_subplot(grid[0, 2 + j])
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(f"generation {j}", fontsize=8)
        ax.axis("off")
        if near is not None:
            ax = fig.add_subplot(grid[1, 2 + j])
            train = (data.images[near.nn_index[j]] + 1) / 2
            ax.imshow(train.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            verdict = "copy" if near.ratio[j] < GU_RATIO_THRESHOLD else "not a copy"
            ax.set_title(f"nearest training image\nd1/d2 = {near.ratio[j]:.2f} ({verdict})", fontsize=8)
            ax.axis("off")
    fig.suptitle(prompt, fontsize=10)
    fig.tight_layout()
    return fig


def explorer(cfg):
    """The widget: a prompt box and a button; ``cfg`` is notebook 02's ``ExplainConfig`` (backend, steps)."""
    import ipywidgets as w

    backend = make_backend(cfg.backend, cfg.testbed, seed=cfg.seed, **cfg.backend_options())
    text = w.Text(value=EXAMPLE_PROMPT, description="prompt", layout=w.Layout(width="60%"))
    button = w.Button(description="explain", button_style="primary")
    out = w.Output()

    def run(_):
        out.clear_output()
        with out:
            if not text.value.strip():
                print("type a prompt first")
                return
            explorer_figure(backend, text.value, cfg.generation_config(), cfg.steps())
            plt.show()

    button.on_click(run)
    return w.VBox([w.HBox([text, button]), out])
