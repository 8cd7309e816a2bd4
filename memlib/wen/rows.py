"""Which rows of the text embedding carry a memorized prompt to the UNet: its own tokens' or EOS/padding's?

Stable Diffusion's tokenizer pads with EOS, and its causal CLIP text encoder lets every row after a token attend
to it, so the rows after the prompt (BOS e_p^0, tokens e_p^1..n, then EOS/padding e_p^{n+1}..) hold the whole
prompt too. Wen et al. (ICLR 2024, Sec. 3.2) chart the prompt's own rows only and drop the rest; Kim & No
(arXiv 2605.02908) mitigate memorization by masking the EOT/padding embeddings. This module swaps rows between a
prompt's embedding and the empty prompt's, a causal probe of the two routes:

- ``rows="padding"``: the prompt's EOS/padding rows are replaced by the empty prompt's at the same positions, so
  the prompt reaches the UNet through its own token rows only;
- ``rows="prompt"``: its token rows are replaced instead, so it reaches the UNet through the EOS/padding rows only.

BOS is the same row in both embeddings (a causal encoder's first row sees nothing else), and the empty prompt
itself is left unchanged by either swap, so classifier-free guidance's unconditional branch is untouched.
"""
from __future__ import annotations

import torch

ROW_SETS = ("padding", "prompt")


def padding_mask(tokenizer, prompts: list[str], length: int) -> torch.Tensor:
    """(P, length, 1) float mask: 1 on the EOS/padding rows after each prompt's tokens, 0 on BOS and tokens."""
    mask = torch.zeros(len(prompts), length, 1)
    for k, p in enumerate(prompts):
        mask[k, tokenizer.n_tokens(p) + 1:] = 1.0
    return mask


def swap_rows(emb: torch.Tensor, empty: torch.Tensor, mask: torch.Tensor, rows: str) -> torch.Tensor:
    """``emb`` with its ``rows`` ('padding' or 'prompt') taken from ``empty`` (the empty prompt's embedding)."""
    if rows not in ROW_SETS:
        raise ValueError(f"rows={rows!r}; choose one of {ROW_SETS}")
    take = (mask if rows == "padding" else 1.0 - mask).clone()
    take[:, :1] = 0.0                     # BOS is never swapped (it is the same row in both anyway)
    take = take.to(emb.device, emb.dtype)
    return emb * (1 - take) + empty.expand_as(emb) * take


class RowSwapBackend:
    """``backend`` whose prompt embeddings have ``rows`` replaced by the empty prompt's; everything else (noise,
    model, scheduler, decoding) is the wrapped backend's, so ``generate`` and detection run on it unchanged."""

    def __init__(self, backend, rows: str):
        if rows not in ROW_SETS:
            raise ValueError(f"rows={rows!r}; choose one of {ROW_SETS}")
        self.backend, self.rows = backend, rows
        self.name = f"{backend.name}+{rows}-rows-from-empty"

    def __getattr__(self, attr):
        return getattr(self.backend, attr)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        emb = self.backend.encode_prompts(prompts)
        empty = self.backend.encode_prompts([""])
        return swap_rows(emb, empty, padding_mask(self.backend.tokenizer, list(prompts), emb.shape[1]), self.rows)
