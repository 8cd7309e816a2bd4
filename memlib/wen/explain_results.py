"""Typed results of notebook 02 (``memlib.wen.explain_study``): every headline is a field; ``to_metrics`` flattens
them into the keys of ``figures/02_explain/metrics.json`` (the only place those key strings are built).

The headline is Wen et al.'s (ICLR 2024, Sec. 3.2) token attribution in their notebook's exact setting, all
sampling steps and one l2 norm over the 4-image batch, on the test half of the verbatim prompts (``HalfStats``).
An interval ``*_ci95`` is Wilson's 95 % interval over prompts (``memlib.wen.intervals``), written as [lo, hi]."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..claims import Claim
from .attribution import TokenSignificance
from .explain_report import claims as report_claims
from .intervals import rate_with_interval


@dataclass
class RouteStats:
    """Regenerating a group's prompts with some embedding rows taken from the empty prompt (``memlib.wen.rows``)."""
    replication: float               # share of generations that copy the planted image
    first_step_magnitude: float      # mean first-step magnitude d(p)


@dataclass
class ContentRouteStats:
    """The row routes on held-out prompts (nothing memorized): does the prompt's content survive?"""
    n_prompts: int
    top1_retrieval: float            # share of generations the testbed CLIP retrieves as the prompt's combination
    clip_score: float                # testbed CLIP score against the prompt
    first_step_magnitude: float      # mean first-step magnitude d(p)


@dataclass
class PaddingLinkStats:
    """Prompt by prompt, Wen's hits (trigger in the top 2, exact setting, all prompts) against its misses."""
    n_hits: int
    n_misses: int
    padding_share_hits: float                # integrated-gradients share of d(p) on the EOS/padding rows
    padding_share_misses: float
    replication_token_rows_only_hits: float  # replication with the EOS/padding rows emptied
    replication_token_rows_only_misses: float
    replication_padding_rows_only_hits: float    # replication with the token rows emptied
    replication_padding_rows_only_misses: float


@dataclass
class HalfStats:
    """A trigger group split by planted cluster (``memlib.splits``): what is chosen is chosen on the dev half,
    every rate here is measured on the test half. Wen's setting has nothing to choose; the window k does."""
    n_dev: int
    n_test: int
    batch_loss: bool                         # L_t one norm over the batch (Wen's notebook), else mean image norm
    all_steps_test: float                    # gradients over all steps: Wen's exact setting with ``batch_loss``
    all_steps_test_ci95: tuple[float, float]
    window_rates_dev: dict[str, float]       # candidate k -> top-2 rate of the first k steps on the dev half
    chosen_window_dev: int                   # the k with the best dev rate (ties: the longer window)
    window_test: float                       # that window's rate on the test half
    window_test_ci95: tuple[float, float]
    chance_test: float                       # a random ranking's rate on the test half
    reference_trajectory_test: float | None = None   # all steps on the reference code's trajectory (a variant)
    reference_trajectory_test_ci95: tuple[float, float] | None = None

    @property
    def all_steps_test_hits(self) -> int:
        return round(self.all_steps_test * self.n_test) if self.n_test else 0

    def headline(self) -> dict:
        """The seed's headline numbers (``per_seed`` in the metrics)."""
        return {"wen_exact": self.all_steps_test, "wen_exact_ci95": list(self.all_steps_test_ci95),
                "chosen_window_dev": self.chosen_window_dev, "window_test": self.window_test,
                "chance_test": self.chance_test, "n_test": self.n_test}

    def to_metrics(self, prefix: str) -> dict:
        head = "wen_exact" if self.batch_loss else "all_steps_mean_image_norm"
        m = {f"{prefix}_n_dev": self.n_dev, f"{prefix}_n_test": self.n_test,
             f"{prefix}_trigger_top2_rate_{head}": self.all_steps_test,
             f"{prefix}_trigger_top2_rate_{head}_ci95": list(self.all_steps_test_ci95),
             f"{prefix}_trigger_top2_rate_window_dev_by_k": self.window_rates_dev,
             f"{prefix}_chosen_window_dev": self.chosen_window_dev,
             f"{prefix}_trigger_top2_rate_window_test": self.window_test,
             f"{prefix}_trigger_top2_rate_window_test_ci95": list(self.window_test_ci95),
             f"{prefix}_trigger_top2_chance_test": self.chance_test}
        if self.reference_trajectory_test is not None:
            m[f"{prefix}_trigger_top2_rate_reference_trajectory"] = self.reference_trajectory_test
            m[f"{prefix}_trigger_top2_rate_reference_trajectory_ci95"] = list(self.reference_trajectory_test_ci95)
        return m


@dataclass
class TriggerGroupStats:
    """How often each attribution method ranks the planted trigger in its top 2, for one trigger group."""
    n_prompts: int
    trigger_top2_rate: float                 # Wen's gradient norm, window S, all prompts of the group
    trigger_top2_rate_ci95: tuple[float, float]
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
    halves: HalfStats | None = None          # dev/test halves: the headline and the dev-chosen window
    routes: dict[str, RouteStats] = field(default_factory=dict)   # 'full', 'padding_rows_from_empty', ...
    padding_link: PaddingLinkStats | None = None   # padding route of Wen's hits against its misses

    @property
    def trigger_top2_rate_all_steps(self) -> float:
        return self.trigger_top2_rate_by_steps["all"]

    def to_metrics(self, prefix: str) -> dict:
        m = {f"{prefix}_{k}": v for k, v in asdict(self).items() if k not in ("routes", "halves", "padding_link")}
        m[f"{prefix}_trigger_top2_rate_ci95"] = list(self.trigger_top2_rate_ci95)
        m[f"{prefix}_trigger_top2_rate_all_steps"] = self.trigger_top2_rate_all_steps
        if self.halves is not None:
            m.update(self.halves.to_metrics(prefix))
        for label, r in self.routes.items():
            m.update({f"{prefix}_route_{label}_{k}": v for k, v in asdict(r).items()})
        if self.padding_link is not None:
            m.update({f"{prefix}_padding_link_{k}": v for k, v in asdict(self.padding_link).items()})
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
    reference: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # same, reference code's trajectory
    halves: dict[str, list[str]] = field(default_factory=dict)   # trigger group -> 'dev' / 'test' per prompt
    triggers: dict[str, list[list[int]]] = field(default_factory=dict)   # group -> trigger token positions
    occlusion: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    integrated: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    input_grad: dict[str, list[TokenSignificance]] = field(default_factory=dict)  # trigger groups: cross-check
    trigger_stats: dict[str, TriggerGroupStats] = field(default_factory=dict)
    top1_token_counts: dict[str, dict[str, int]] = field(default_factory=dict)   # group -> most often top token
    mean_magnitude: dict[str, float] = field(default_factory=dict)   # group -> mean loss L_t over window S
    edit: EditStats | None = None            # the most significant token dropped
    edit_trigger_dropped: EditStats | None = None   # control: the planted trigger dropped
    edits: list[dict] = field(default_factory=list)    # the edit experiment, one row per verbatim prompt
    drop_control: DropControlStats | None = None
    drops: list[dict] = field(default_factory=list)    # the drop control, one row per (verbatim prompt, token)
    heldout_routes: dict[str, ContentRouteStats] = field(default_factory=dict)   # padding control, held-out
    seed_halves: dict[int, dict[str, HalfStats]] = field(default_factory=dict)  # testbed seed -> group -> headline
    padding_rows: list[dict] = field(default_factory=list)   # padding route per verbatim prompt, hit or miss
    checkpoint: str = ""
    batch_loss: bool = True                  # L_t: one norm over the n-image batch (Wen's notebook)

    def claims(self) -> list[Claim]:
        """Wen et al.'s attribution claims and this notebook's controls as this run measured them
        (``explain_report.claims`` on ``to_metrics()``)."""
        return report_claims(self.to_metrics())

    def to_metrics(self) -> dict:
        m: dict = {"checkpoint": self.checkpoint,
                   "attribution_loss": "batch_norm" if self.batch_loss else "mean_image_norm"}
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
        for label, r in self.heldout_routes.items():
            m.update({f"heldout_route_{label}_{k}": v for k, v in asdict(r).items()})
        if self.seed_halves:
            m.update(self._pooled_over_seeds())
        return m

    def _pooled_over_seeds(self) -> dict:
        """The headline per testbed seed, and pooled: every seed's test-half prompts together (independent
        prompts of independent testbeds), with a Wilson interval and the range across seeds."""
        seeds = sorted(self.seed_halves)
        m: dict = {"n_testbed_seeds": len(seeds), "testbed_seeds": seeds,
                   "per_seed": {str(s): {g: h.headline() for g, h in self.seed_halves[s].items()} for s in seeds}}
        for g in dict.fromkeys(g for s in seeds for g in self.seed_halves[s]):
            halves = [self.seed_halves[s][g] for s in seeds if g in self.seed_halves[s]]
            k, n = sum(h.all_steps_test_hits for h in halves), sum(h.n_test for h in halves)
            rate, ci = rate_with_interval([True] * k + [False] * (n - k))
            rates = [h.all_steps_test for h in halves]
            m.update({f"{g}_trigger_top2_rate_wen_exact_pooled": rate,
                      f"{g}_trigger_top2_rate_wen_exact_pooled_ci95": list(ci),
                      f"{g}_trigger_top2_rate_wen_exact_seed_range": [min(rates), max(rates)],
                      f"{g}_n_test_pooled": n})
        return m
