"""Typed results of notebook 02 (``memlib.wen.explain``): every headline is a field; ``to_metrics`` flattens them
into the keys of ``figures/02_explain/metrics.json`` (the only place those key strings are built)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .attribution import TokenSignificance

# The README's results table (``memlib results``): (metric key written by ``to_metrics``, what it is, target)
HEADLINES = [
    ("verbatim_trigger_top2_rate", "trigger token in top-2 of attribution, window S", ">= 0.80"),
    ("verbatim_trigger_top2_rate_all_steps", "... same gradients over all 50 steps (Wen's notebook)",
     "report"),
    ("verbatim_trigger_top2_chance", "... a random ranking's rate (chance level)", "report"),
    ("verbatim_trigger_top2_rate_occlusion", "... cross-check: drop each token, first-step loss",
     "report"),
    ("verbatim_trigger_top2_rate_integrated",
     "... cross-check: integrated gradients from the empty prompt, first step", "report"),
    ("verbatim_trigger_top2_rate_input_embedding",
     "... cross-check: Wen's gradient norm at the encoder's input embeddings, first step", "report"),
    ("verbatim_integrated_padding_share", "share of d(p) on EOS/padding rows (integrated gradients)",
     "report"),
    ("verbatim_route_prompt_rows_from_empty_replication",
     "replication with the prompt's token rows emptied (EOS/padding rows kept)", "report"),
    ("verbatim_route_padding_rows_from_empty_replication",
     "replication with the EOS/padding rows emptied (token rows kept)", "report"),
    ("drop_control_replication_trigger_piece",
     "ground truth: replication after dropping one trigger piece", "report"),
    ("drop_control_replication_other_token", "... after dropping one other token", "report"),
    ("edit_first_step_lowered_share", "share whose first-step magnitude falls after the edit",
     "report"),
    ("edit_replication_before", "replication before dropping the top token", "report"),
    ("edit_replication_after", "replication after dropping the top token", "report"),
]



@dataclass
class RouteStats:
    """Regenerating a group's prompts with some embedding rows taken from the empty prompt (``memlib.wen.rows``)."""
    replication: float               # share of generations that copy the planted image
    first_step_magnitude: float      # mean first-step magnitude d(p)


@dataclass
class TriggerGroupStats:
    """How often each attribution method ranks the planted trigger in its top 2, for one trigger group."""
    n_prompts: int
    trigger_top2_rate: float                 # Wen's gradient norm, window S
    trigger_top2_chance: float               # a random ranking's rate
    trigger_top2_rate_by_steps: dict[str, float]   # the same gradients over other windows ('all': Wen's notebook)
    trigger_top2_rate_occlusion: float       # cross-check (not Wen's): first-step magnitude lost per dropped token
    trigger_top2_rate_input_embedding: float  # cross-check: gradient at the encoder's input embeddings
    trigger_top2_rate_integrated: float      # cross-check: integrated gradients from e_empty
    integrated_completeness_max_error: float
    integrated_padding_share: float          # share of d(p) integrated gradients put on EOS/padding rows
    path_alpha90_mean: float                 # where on the path e_empty -> e_p the magnitude reaches 90 %
    path_alpha90_wen_first_step_hits: float
    path_alpha90_wen_first_step_misses: float
    routes: dict[str, RouteStats] = field(default_factory=dict)   # 'full', 'padding_rows_from_empty', ...

    @property
    def trigger_top2_rate_all_steps(self) -> float:
        return self.trigger_top2_rate_by_steps["all"]

    def to_metrics(self, prefix: str) -> dict:
        m = {f"{prefix}_{k}": v for k, v in asdict(self).items() if k != "routes"}
        m[f"{prefix}_trigger_top2_rate_all_steps"] = self.trigger_top2_rate_all_steps
        for label, r in self.routes.items():
            m.update({f"{prefix}_route_{label}_{k}": v for k, v in asdict(r).items()})
        return m


@dataclass
class EditStats:
    """Regenerating verbatim prompts with a token dropped: replication and magnitude before and after."""
    replication_before: float
    replication_after: float
    magnitude_before: float                  # all steps (Wen's detection default)
    magnitude_after: float
    first_step_magnitude_before: float
    first_step_magnitude_after: float
    magnitude_lowered_share: float           # prompts whose magnitude fell
    first_step_lowered_share: float

    def to_metrics(self, prefix: str, with_before: bool = True) -> dict:
        return {f"{prefix}_{k}": v for k, v in asdict(self).items() if with_before or not k.endswith("_before")}


@dataclass
class DropControlStats:
    """Ground truth: replication after dropping each token of each verbatim prompt in turn."""
    replication_trigger_piece: float
    replication_other_token: float
    n_variants: dict[str, int]
    replication_by_kind: dict[str, float]    # trigger_piece, content_word, function_word
    trigger_more_necessary_share: float      # prompts where losing a trigger piece hurts more than another token

    def to_metrics(self) -> dict:
        return {f"drop_control_{k}": v for k, v in asdict(self).items()}


@dataclass
class ExplainResult:
    """Notebook 02's results: per-prompt attributions behind the plots, the summaries as typed fields."""
    attributions: dict[str, list[TokenSignificance]]   # group -> per prompt (Wen's gradients, window S)
    triggers: dict[str, list[list[int]]] = field(default_factory=dict)   # group -> trigger token positions
    occlusion: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    integrated: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    input_grad: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    trigger_stats: dict[str, TriggerGroupStats] = field(default_factory=dict)
    top1_token_counts: dict[str, dict[str, int]] = field(default_factory=dict)   # group -> most often top token
    mean_magnitude: dict[str, float] = field(default_factory=dict)               # group -> mean d(p), window S
    edit: EditStats | None = None            # the most significant token dropped
    edit_trigger_dropped: EditStats | None = None   # control: the planted trigger dropped
    edits: list[dict] = field(default_factory=list)    # the edit experiment, one row per verbatim prompt
    drop_control: DropControlStats | None = None
    drops: list[dict] = field(default_factory=list)    # the drop control, one row per (verbatim prompt, token)
    checkpoint: str = ""

    def to_metrics(self) -> dict:
        m: dict = {"checkpoint": self.checkpoint}
        for g, st in self.trigger_stats.items():
            m.update(st.to_metrics(g))
        for g in self.attributions:
            m[f"{g}_top1_token_counts"] = self.top1_token_counts[g]
            m[f"{g}_mean_magnitude"] = self.mean_magnitude[g]
        if self.edit is not None:
            m.update(self.edit.to_metrics("edit"))
            m.update(self.edit_trigger_dropped.to_metrics("edit_trigger_dropped", with_before=False))
        if self.drop_control is not None:
            m.update(self.drop_control.to_metrics())
        return m
