"""The README's results table, generated from the metrics files (``memlib results``); never typed in."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..paths import repo_root

# (notebook, metric key, what it is, the target)
HEADLINES = [
    ("00_testbed", "verbatim_replication_rate", "planted specific prompts that copy their image", ">= 0.80"),
    ("00_testbed", "heldout_replication_rate", "held-out compositional prompts that copy", "<= 0.05"),
    ("00_testbed", "image_dup_replication_rate", "image-duplication prompts that copy", "measured"),
    ("00_testbed", "caption_dup_replication_rate", "caption-duplication prompts that copy", "measured"),
    ("00_testbed", "heldout_clip_score", "testbed CLIP score, held-out generations", "> random caption"),
    ("00_testbed", "heldout_clip_score_random_caption", "... same images vs a random caption", ""),
    ("00_testbed", "heldout_top1_retrieval", "held-out generations: top-1 caption retrieval (320)", "report"),
    ("01_detection", "auc_first_step_1gen", "Wen AUC, first step, 1 generation (memorized vs held-out)", ">= 0.95"),
    ("01_detection", "tpr1fpr_first_step_1gen", "Wen TPR@1%FPR, first step, 1 generation", ">= 0.80"),
    ("01_detection", "ideal_auc_first_step", "ideal denoiser computed from the data, first-step AUC", "report"),
    ("01_detection", "vs_random_auc_first_step_1gen", "Wen AUC, first step, 1 generation vs random tokens", "report"),
    ("01_detection", "auc_all_steps_4gen", "Wen AUC, all steps, 4 generations", "report"),
    ("01_detection", "baseline_auc", "Carlini tiled-l2 baseline AUC", "report"),
    ("02_explain", "verbatim_trigger_top2_rate", "trigger token in top-2 of attribution, window S", ">= 0.80"),
    ("02_explain", "verbatim_trigger_top2_rate_all_steps", "... same gradients over all 50 steps (Wen's notebook)",
     "report"),
    ("02_explain", "verbatim_trigger_top2_chance", "... a random ranking's rate (chance level)", "report"),
    ("02_explain", "verbatim_trigger_top2_rate_occlusion", "... cross-check: drop each token, first-step loss",
     "report"),
    ("02_explain", "verbatim_trigger_top2_rate_integrated",
     "... cross-check: integrated gradients from the empty prompt, first step", "report"),
    ("02_explain", "verbatim_trigger_top2_rate_input_embedding",
     "... cross-check: Wen's gradient norm at the encoder's input embeddings, first step", "report"),
    ("02_explain", "verbatim_integrated_padding_share", "share of d(p) on EOS/padding rows (integrated gradients)",
     "report"),
    ("02_explain", "verbatim_route_prompt_rows_from_empty_replication",
     "replication with the prompt's token rows emptied (EOS/padding rows kept)", "report"),
    ("02_explain", "verbatim_route_padding_rows_from_empty_replication",
     "replication with the EOS/padding rows emptied (token rows kept)", "report"),
    ("02_explain", "drop_control_replication_trigger_piece",
     "ground truth: replication after dropping one trigger piece", "report"),
    ("02_explain", "drop_control_replication_other_token", "... after dropping one other token", "report"),
    ("02_explain", "edit_first_step_lowered_share", "share whose first-step magnitude falls after the edit",
     "report"),
    ("02_explain", "edit_replication_before", "replication before dropping the top token", "report"),
    ("02_explain", "edit_replication_after", "replication after dropping the top token", "report"),
]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_table(figures: Path | None = None) -> str:
    figures = figures or repo_root() / "figures"
    rows = ["| notebook | metric | value | target | commit |", "|---|---|---|---|---|"]
    for nb, key, what, target in HEADLINES:
        path = figures / nb / "metrics.json"
        if not path.exists():
            rows.append(f"| {nb} | {what} | not yet run | {target} | |")
            continue
        body = json.loads(path.read_text())
        v = body["metrics"].get(key)
        shown = f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"
        rows.append(f"| {nb} | {what} (`{key}`) | {shown} | {target} | {body['provenance']['git_commit'][:10]} |")
    return "\n".join(rows)


def update_readme(readme: Path | None = None) -> bool:
    """Replace the block between the results markers; returns True if the README changed."""
    readme = readme or repo_root() / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {BEGIN} ... {END}")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{results_table()}\n{END}",
                 text, flags=re.S)
    readme.write_text(new)
    return new != text
