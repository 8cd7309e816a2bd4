"""The testbed's frozen, pretrained text encoder: the testbed CLIP's text tower in transformers' layout.

Stable Diffusion conditions its UNet on a text encoder that was pretrained elsewhere (OpenAI CLIP ViT-L/14,
converted to transformers' ``CLIPTextModel``) and stays frozen while the UNet learns (Rombach et al. 2022,
Sec. 4.3). The testbed does the same: the text tower of its contrastively trained CLIP (``memlib.clip_eval``)
is converted, weight for weight, into the ``CLIPTextModel`` of ``memlib.models.TextToImageModel`` and frozen.

Why this matters for Wen et al.'s token attribution (Sec. 3.2): when the encoder is trained jointly with the
UNet, the two co-adapt. On testbed v2 the encoder made the rows of the caption's constant first words copies
of BOS, and their gradients outranked the planted trigger for every prompt (trigger top-2 rate 0.000). A
frozen encoder cannot be bent that way, as SD's cannot.
"""
from __future__ import annotations

import torch


def _text_state_from_open_clip(clip: torch.nn.Module) -> dict[str, torch.Tensor]:
    """open_clip text-tower weights renamed (and q/k/v split) to transformers' ``CLIPTextModel`` keys."""
    sd = clip.state_dict()
    out = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"],
           "text_model.final_layer_norm.bias": sd["ln_final.bias"]}
    for i in range(len(clip.transformer.resblocks)):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for proj, w, b in zip(("q_proj", "k_proj", "v_proj"), sd[src + "attn.in_proj_weight"].chunk(3),
                              sd[src + "attn.in_proj_bias"].chunk(3)):
            out[f"{dst}self_attn.{proj}.weight"], out[f"{dst}self_attn.{proj}.bias"] = w, b
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for kind in ("weight", "bias"):
                out[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
    return {k: v.detach().clone() for k, v in out.items()}


def load_clip_text_tower(text_encoder: torch.nn.Module, clip: torch.nn.Module) -> None:
    """Copy ``clip``'s text tower (open_clip) into ``text_encoder`` (transformers ``CLIPTextModel``) and freeze it.

    Raises ValueError when the two architectures differ (widths, layers, context length or activation)."""
    cfg = text_encoder.config
    width, layers = clip.token_embedding.weight.shape[1], len(clip.transformer.resblocks)
    block = clip.transformer.resblocks[0]
    ctx, mlp, heads = clip.positional_embedding.shape[0], block.mlp.c_fc.out_features, block.attn.num_heads
    mine = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.max_position_embeddings,
            cfg.intermediate_size, cfg.hidden_act)
    theirs = (width, layers, heads, ctx, mlp, "gelu")
    if mine != theirs:
        raise ValueError(f"the text encoder (width, layers, heads, context, mlp, activation) = {mine} does not match "
                         f"the CLIP text tower's {theirs}; make TextToImageConfig's text settings match ClipConfig")
    state = _text_state_from_open_clip(clip)
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):  # newer transformers: no prefix
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing, unexpected = text_encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"CLIP text tower conversion left weights unmatched: missing {missing}, "
                         f"unexpected {unexpected}")
    text_encoder.requires_grad_(False)


def open_clip_token_rows(clip: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Per-token output rows (after the final layer norm) of an open_clip text tower; the reference the
    converted encoder must reproduce."""
    x = clip.token_embedding(ids) + clip.positional_embedding
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    return clip.ln_final(x)
