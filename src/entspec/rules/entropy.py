"""The entropy rules: stop drafting when the drafter's own uncertainty says so."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..validate import bounds, check
from .base import STOPPING_CRITERIA, DraftState, RoundFeedback, StoppingCriterion, register

if TYPE_CHECKING:
    from ..engine.config import EntropyConfig

__all__ = ["AbsoluteEntropy", "AdaptiveEntropy", "CombinedCriterion", "RelativeEntropy", "WindowEntropy"]


@register("absolute", threshold="theta_abs",
          sweep={"theta_abs": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0), "max_draft_len": (8, 12, 20)})
class AbsoluteEntropy(StoppingCriterion):
    """Stop when H_t > theta_abs."""

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.config.theta_abs

    @property
    def threshold(self) -> float:
        return self.config.theta_abs


@dataclass(frozen=True)
class RelativeParams:
    theta_rel: float = field(default=1.5, metadata=bounds(min=0))  # stop when H_t > theta_rel x reference
    reference_momentum: float = field(default=0.9, metadata=bounds(min=0, max=1))  # EMA of accepted tokens' entropy


@register("relative", threshold="theta_rel", params=RelativeParams,
          sweep={"theta_rel": (0.5, 1.0, 1.5, 2.0, 3.0, 5.0), "theta_abs": (1.0, 2.0), "max_draft_len": (8, 12, 20)})
class RelativeEntropy(StoppingCriterion):
    """Stop when H_t > theta_rel x reference entropy.

    The reference is an exponential moving average (momentum `reference_momentum`) of the drafter's entropy
    on tokens the verifier accepted in earlier rounds: "more uncertain than usual where it is usually
    right". Until a first token has been accepted, the absolute rule with `theta_abs` stands in.
    """

    def reset(self) -> None:
        self.reference: float | None = None

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.threshold

    def update(self, feedback: RoundFeedback) -> None:
        m = self.config.reference_momentum
        for h in feedback.entropies[: feedback.accepted]:
            self.reference = h if self.reference is None else m * self.reference + (1 - m) * h

    @property
    def threshold(self) -> float:
        if self.reference is None:
            return self.config.theta_abs
        return self.config.theta_rel * self.reference


@dataclass(frozen=True)
class WindowParams:
    window_size: int = field(default=3, metadata=bounds(min=1))
    theta_window: float | None = field(default=None, metadata=bounds(min=0))  # None: theta_abs


@register("window", threshold="theta_window", params=WindowParams,
          sweep={"theta_window": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0), "window_size": (2, 3), "max_draft_len": (8, 12, 20)})
class WindowEntropy(StoppingCriterion):
    """Stop when the mean entropy of the last `window_size` drafted tokens exceeds `theta_window`.

    Smooths single spikes; fewer than `window_size` tokens are averaged as they are.
    """

    def should_stop(self, state: DraftState) -> bool:
        recent = state.entropies[-self.config.window_size :]
        return sum(recent) / len(recent) > self.threshold

    @property
    def threshold(self) -> float:
        w = self.config.theta_window
        return self.config.theta_abs if w is None else w


@dataclass(frozen=True)
class CombinedParams:
    criteria: list[Any] = field(default_factory=lambda: ["absolute", "window"])  # names, or dicts of overrides
    combine: str = field(default="any", metadata=bounds(choices=("any", "all")))

    def __post_init__(self) -> None:
        check(len(self.criteria) > 0, "criteria", self.criteria, "must be a non-empty list")


@register("combined", reads=("entropies", "token_probs", "shannon_nats"), threshold="theta_abs", params=CombinedParams,
          sweep={"theta_abs": (0.5, 1.0, 2.0, 3.0), "max_draft_len": (8, 12, 20)})
class CombinedCriterion(StoppingCriterion):
    """Several rules joined by ``combine`` = "any" (stop when one says stop) or "all".

    ``criteria`` items are rule names, or dicts ``{"strategy": name, **field overrides}``.
    """

    def __init__(self, config: EntropyConfig) -> None:
        self.rules = [STOPPING_CRITERIA[c["strategy"]](config.replace(**c)) for c in _as_dicts(config.criteria)]
        super().__init__(config)

    def reset(self) -> None:
        for rule in self.rules:
            rule.reset()

    def should_stop(self, state: DraftState) -> bool:
        votes = (rule.should_stop(state) for rule in self.rules)
        return any(votes) if self.config.combine == "any" else all(votes)

    def update(self, feedback: RoundFeedback) -> None:
        for rule in self.rules:
            rule.update(feedback)


def _as_dicts(criteria: list) -> list[dict]:
    out = []
    for c in criteria:
        c = {"strategy": c} if isinstance(c, str) else dict(c)
        if c.get("strategy") not in STOPPING_CRITERIA or c["strategy"] == "combined":
            raise ValueError(f"criteria: unknown or nested rule {c.get('strategy')!r}")
        out.append(c)
    return out


@register("adaptive", threshold="theta_abs",
          sweep={"theta_abs": (0.5, 1.0, 2.0), "target_acceptance": (0.6, 0.7, 0.8, 0.9), "adapt_rate": (0.25, 0.5, 1.0),
                 "max_draft_len": (8, 12, 20)})
class AdaptiveEntropy(StoppingCriterion):
    """Absolute rule whose threshold follows verification feedback toward `target_acceptance`.

    After each round with acceptance rate a: theta <- clip(theta * exp(adapt_rate * (a - target)),
    theta_min, theta_max). Acceptance above target means drafting stops too early, so theta rises.
    Starts at `theta_abs` for every generation.
    """

    def reset(self) -> None:
        self.theta = self.config.theta_abs

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.theta

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        c = self.config
        step = math.exp(c.adapt_rate * (feedback.acceptance_rate - c.target_acceptance))
        self.theta = min(c.theta_max, max(c.theta_min, self.theta * step))

    @property
    def threshold(self) -> float:
        return self.theta
