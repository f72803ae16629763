"""`EntropyConfig`: every hyperparameter of the drafting policy, typed and validated in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .entropy import ENTROPY_TYPES


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming the field."""


@dataclass(frozen=True)
class EntropyConfig:
    """How the drafter decides when to stop drafting.

    Thresholds are entropies in ``entropy_unit`` (nats by default) of the drafter's processed next-token
    distribution (after temperature / top-k / top-p; at temperature 0, of its temperature-1 distribution).
    A drafted token whose entropy trips the rule is still proposed (its draft cost is already paid and
    verifying it is nearly free); drafting stops after it.

    Frozen: a decoder's policy cannot change under it; derive another with ``config.replace(field=value)``.
    """

    strategy: str = "absolute"  # a name in entspec.engine.stopping.STOPPING_CRITERIA
    entropy_type: str = "shannon"  # "shannon" | "renyi" | "topk"
    theta_abs: float = 2.0  # absolute: stop when H_t > theta_abs
    theta_rel: float = 1.5  # relative: stop when H_t > theta_rel * reference entropy
    max_draft_len: int = 8  # hard cap of every rule; `fixed` drafts exactly this many
    min_draft_len: int = 1  # the rule is not consulted before this many tokens are drafted
    entropy_unit: str = "nats"  # "nats" | "bits"
    renyi_alpha: float = 2.0  # order of the Rényi entropy (inf = min-entropy)
    entropy_topk: int = 10  # k of the top-k entropy
    # relative: the reference is an exponential moving average of the drafter's entropy on accepted tokens
    reference_momentum: float = 0.9
    # window: stop when the mean entropy of the last `window_size` drafted tokens exceeds theta_window
    window_size: int = 3
    theta_window: float | None = None  # None -> theta_abs
    # combined: sub-rules (names, or dicts of overrides with a "strategy" key) joined by any / all
    criteria: list[Any] = field(default_factory=lambda: ["absolute", "window"])
    combine: str = "any"
    # adaptive: theta moves from verification feedback toward a target acceptance rate, within bounds
    target_acceptance: float = 0.8
    adapt_rate: float = 0.5
    theta_min: float = 0.05
    theta_max: float = 10.0
    # confidence (Hugging Face ConfidenceCriteria): stop when the drafted token's probability < threshold
    confidence_threshold: float = 0.4
    # heuristic (Hugging Face schedule): start length; +2 after a fully accepted round, -1 otherwise
    heuristic_initial: int = 5
    # svip: stop when sqrt(svip_gamma * H) > svip_threshold (nats)
    svip_gamma: float = 0.15
    svip_threshold: float = 0.3
    # adaedl: stop when 1 - sqrt(adaedl_gamma * H) < lambda; lambda adapted online toward target_acceptance
    adaedl_gamma: float = 0.2
    adaedl_lambda: float = 0.3
    # Costs in units of a one-token verifier call (from the cost model; `entspec tune` writes measured values):
    cost_ratio: float = 0.45  # c: one drafter step
    verify_slope: float = 0.02  # s: each extra verified token
    # gate (entspec.engine.gate): before each round, draft nothing while speculative rounds emit fewer tokens per unit
    # of cost than plain decoding; probe again after 1, 2, 4, ... 32 rounds. Never changes what is emitted.
    # Off by default: measured to cost 4-6% when sampling at T = 0.7 on spec6 (docs/benchmarks.md).
    gate: bool = False
    gate_memory: float = 0.9  # decay of the moving sums, per speculative round (about a 10-round window)
    # goodput: draft one more token while its expected tokens per unit of cost beat the rate so far.
    # Acceptance probability of a drafted token = sigmoid(calib_intercept + calib_slope * H) (fitted on traces
    # by `entspec tune`, then updated online by SGD on the verifier's verdicts at rate calib_lr).
    goodput_margin: float = 1.0  # continue while gain > margin * rate * cost (1.0: the marginal-value rule)
    calib_intercept: float = 2.5
    calib_slope: float = -1.5
    calib_prob: float = 0.0  # weight of the drafted token's probability (a two-feature calibration; 0: entropy only)
    calib_lr: float = 0.05
    # An isotonic calibration instead of the logistic one: knots [[H, beta], ...] (H ascending), interpolated
    # linearly; online, one logit offset follows the verdicts. Fitted by `entspec tune` (scikit-learn).
    calib_curve: list[list[float]] | None = None
    # The next token's acceptance from the *current* token's statistics: sigmoid(next_intercept + next_slope * H
    # + next_prob * q), fitted by `entspec tune` on consecutive positions; None: the current token's beta stands in.
    next_intercept: float | None = None
    next_slope: float = 0.0
    next_prob: float = 0.0
    record_all_entropies: bool = True  # trace every entropy type per drafted token (for analysis)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from .stopping import STOPPING_CRITERIA  # late import: stopping imports this module

        def check(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        check(self.strategy in STOPPING_CRITERIA, "strategy", f"must be one of {sorted(STOPPING_CRITERIA)}")
        check(self.entropy_type in ENTROPY_TYPES, "entropy_type", f"must be one of {list(ENTROPY_TYPES)}")
        check(self.entropy_unit in ("nats", "bits"), "entropy_unit", "must be 'nats' or 'bits'")
        for name in ("theta_abs", "theta_rel", "theta_min", "theta_max", "svip_gamma", "svip_threshold",
                     "adaedl_gamma", "adapt_rate", "renyi_alpha", "goodput_margin", "cost_ratio",
                     "verify_slope", "calib_lr"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool), name, "must be a number")
            check(not math.isnan(value) and value >= 0, name, "must be >= 0")
        for name in ("calib_intercept", "calib_slope", "calib_prob", "next_slope", "next_prob"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), name,
                  "must be a finite number")
        check(self.calib_curve is None or (isinstance(self.calib_curve, list) and len(self.calib_curve) >= 2
                                           and all(isinstance(k, (list, tuple)) and len(k) == 2 for k in self.calib_curve)
                                           and all(a[0] <= b[0] for a, b in zip(self.calib_curve, self.calib_curve[1:]))),
              "calib_curve", "must be null or a list of >= 2 [entropy, probability] knots, entropy ascending")
        check(self.next_intercept is None or (isinstance(self.next_intercept, (int, float))
                                              and math.isfinite(self.next_intercept)), "next_intercept",
              "must be a finite number or null")
        check(self.theta_window is None or self.theta_window >= 0, "theta_window", "must be >= 0")
        for name in ("max_draft_len", "min_draft_len", "window_size", "entropy_topk", "heuristic_initial"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool), name, "must be an integer")
        check(self.max_draft_len >= 1, "max_draft_len", "must be >= 1")
        check(0 <= self.min_draft_len <= self.max_draft_len, "min_draft_len", "must be in [0, max_draft_len]")
        check(self.window_size >= 1, "window_size", "must be >= 1")
        check(self.entropy_topk >= 1, "entropy_topk", "must be >= 1")
        check(self.heuristic_initial >= 1, "heuristic_initial", "must be >= 1")
        check(self.theta_min <= self.theta_max, "theta_min", "must be <= theta_max")
        check(self.combine in ("any", "all"), "combine", "must be 'any' or 'all'")
        check(isinstance(self.criteria, list) and len(self.criteria) > 0, "criteria", "must be a non-empty list")
        check(isinstance(self.gate, bool), "gate", "must be true or false")
        for name in ("target_acceptance", "confidence_threshold", "adaedl_lambda", "reference_momentum",
                     "gate_memory"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, name, "must be in [0, 1]")

    def replace(self, **changes: Any) -> "EntropyConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EntropyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown EntropyConfig field")
        return cls(**data)
