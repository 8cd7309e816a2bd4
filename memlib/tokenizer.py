"""CLIP byte-pair tokenization, offline, with Stable Diffusion's token ids.

open_clip ships OpenAI CLIP's BPE merges inside its package; its ``SimpleTokenizer`` gives the same ids as
the ``CLIPTokenizer`` of Stable Diffusion v1 (49,408 tokens, BOS 49406, EOS 49407). Like SD's tokenizer we
pad with EOS, so an empty prompt is ``[BOS, EOS, EOS, ...]``. The testbed's text encoder uses this tokenizer
too, which keeps one code path for both backends (and makes Wen's "random token" prompts meaningful).
One difference remains: open_clip unescapes HTML entities ("&quot;" -> '"') before encoding, SD's tokenizer
does not, so captions holding entities get other ids; the real backend therefore uses transformers' tokenizer.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch

BOS, EOS = 49406, 49407


def warn_truncated(prompts: list[str], lengths: list[int], limit: int) -> None:
    """One warning per call when prompts have more than ``limit`` tokens: the text encoder never sees the rest.
    (memlib's own message: transformers' "indexing errors" warning is wrong here, we truncate.)"""
    cut = [(n - limit, p) for n, p in zip(lengths, prompts) if n > limit]
    if cut:
        most, example = max(cut, key=lambda c: c[0])
        warnings.warn(f"{len(cut)} of {len(prompts)} prompt(s) exceed the text encoder's {limit} tokens and were "
                      f"truncated: {sum(c[0] for c in cut)} token(s) cut in all (up to {most} from "
                      f"{example[:50]!r}{'...' if len(example) > 50 else ''}); the model never sees them",
                      UserWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _simple_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from open_clip.tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def readable_token(piece: str) -> str:
    """A byte-level BPE piece as text: ``âĢĭ`` -> the bytes it stands for, decoded (a piece holding part of a
    multi-byte character shows the bytes as ``\\x..``); the ``</w>`` word-end mark dropped."""
    piece = piece.replace("</w>", "")
    dec = _byte_decoder()
    if not all(c in dec for c in piece):
        return piece
    return bytes(dec[c] for c in piece).decode("utf-8", errors="backslashreplace")


class ClipBPETokenizer:
    """Tokenize prompts to fixed-length id tensors, SD style (BOS ... EOS, EOS padding, truncation)."""

    vocab_size = 49408
    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, EOS

    def __init__(self, context_length: int = 77):
        if context_length < 3:
            raise ValueError(f"context_length={context_length} must be >= 3 (BOS, one token, EOS)")
        self.context_length = context_length
        self._tok = _simple_tokenizer()

    def token_ids(self, text: str) -> list[int]:
        """The prompt's own token ids, without BOS/EOS."""
        return list(self._tok.encode(text))

    def token_strings(self, text: str) -> list[str]:
        """Readable tokens (``</w>`` marks a word end) of the prompt, without BOS/EOS."""
        return [readable_token(self._tok.decoder[i]) for i in self.token_ids(text)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def __call__(self, prompts: list[str] | str) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        out = torch.full((len(prompts), self.context_length), EOS, dtype=torch.long)
        lengths = []
        for row, text in enumerate(prompts):
            if not isinstance(text, str):
                raise TypeError(f"prompt {row} is {type(text).__name__}, expected str")
            ids = self.token_ids(text)
            lengths.append(len(ids))
            ids = [BOS] + ids[: self.context_length - 2] + [EOS]
            out[row, : len(ids)] = torch.tensor(ids)
        warn_truncated(prompts, lengths, self.context_length - 2)
        return out

    def n_tokens(self, text: str) -> int:
        """How many prompt tokens survive truncation (positions 1..n of the encoded row)."""
        return min(len(self.token_ids(text)), self.context_length - 2)


def write_hf_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` that transformers' ``CLIPTokenizer`` loads offline with the
    exact ids of Stable Diffusion's tokenizer (built from the merges open_clip ships)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _simple_tokenizer()
    # open_clip names the specials <start_of_text>/<end_of_text>; transformers expects <|startoftext|>/...
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in merges) + "\n")
    return folder
