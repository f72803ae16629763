"""The rules of the field, for comparison (../shared/references.md): fixed k, Hugging Face's confidence and
heuristic schedules, SVIP and AdaEDL."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..validate import bounds
from .base import DraftState, RoundFeedback, StoppingCriterion, register

__all__ = ["SVIP", "AdaEDL", "ConfidenceCriterion", "FixedLength", "HeuristicSchedule"]


@register("fixed", reads=(), threshold="max_draft_len", sweep={"max_draft_len": tuple(range(1, 13))})
class FixedLength(StoppingCriterion):
    """Plain speculative decoding: always draft `max_draft_len` tokens."""

    def should_stop(self, state: DraftState) -> bool:
        return False


@dataclass(frozen=True)
class ConfidenceParams:
    confidence_threshold: float = field(default=0.4, metadata=bounds(min=0, max=1))


@register("confidence", reads=("token_probs",), threshold="confidence_threshold", params=ConfidenceParams,
          sweep={"confidence_threshold": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "max_draft_len": (8, 12, 20)})
class ConfidenceCriterion(StoppingCriterion):
    """Hugging Face `ConfidenceCriteria`: stop when the drafted token's probability < threshold (static)."""

    def should_stop(self, state: DraftState) -> bool:
        return state.token_probs[-1] < self.config.confidence_threshold

    @property
    def threshold(self) -> float:
        return self.config.confidence_threshold


@dataclass(frozen=True)
class HeuristicParams:
    heuristic_initial: int = field(default=5, metadata=bounds(min=1))


@register("heuristic", reads=(), threshold="heuristic_initial", params=HeuristicParams,
          sweep={"heuristic_initial": (1, 3, 5, 8), "max_draft_len": (8, 12, 20)})
class HeuristicSchedule(StoppingCriterion):
    """Hugging Face's "heuristic" schedule: draft k tokens; k += 2 after a fully accepted round, else k -= 1.

    k starts at `heuristic_initial` each generation and stays in [1, max_draft_len].
    """

    def reset(self) -> None:
        self.k = min(self.config.heuristic_initial, self.config.max_draft_len)

    def should_stop(self, state: DraftState) -> bool:
        return len(state) >= self.k

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        full = feedback.accepted == feedback.drafted
        self.k = min(self.config.max_draft_len, max(1, self.k + 2 if full else self.k - 1))

    @property
    def threshold(self) -> float:
        return float(self.k)


@dataclass(frozen=True)
class SvipParams:
    svip_gamma: float = field(default=0.15, metadata=bounds(min=0))
    svip_threshold: float = field(default=0.3, metadata=bounds(min=0))  # nats


@register("svip", reads=("shannon_nats",), threshold="svip_threshold", params=SvipParams,
          sweep={"svip_threshold": (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6), "max_draft_len": (8, 12, 20, 40)})
class SVIP(StoppingCriterion):
    """SVIP (arXiv 2411.18462): stop when sqrt(svip_gamma * H) > svip_threshold, H Shannon entropy in nats."""

    def should_stop(self, state: DraftState) -> bool:
        return math.sqrt(self.config.svip_gamma * state.shannon_nats[-1]) > self.config.svip_threshold

    @property
    def threshold(self) -> float:
        return self.config.svip_threshold**2 / self.config.svip_gamma  # the same rule as an entropy bound


@dataclass(frozen=True)
class AdaEDLParams:
    adaedl_gamma: float = field(default=0.2, metadata=bounds(min=0))
    adaedl_lambda: float = field(default=0.3, metadata=bounds(min=0, max=1))  # starting lower bound


@register("adaedl", reads=("shannon_nats",), threshold="adaedl_lambda", params=AdaEDLParams,
          sweep={"adaedl_lambda": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "target_acceptance": (0.7, 0.8, 0.9),
                 "max_draft_len": (8, 12, 20)})
class AdaEDL(StoppingCriterion):
    """AdaEDL-style (arXiv 2410.18351): stop when the acceptance lower bound 1 - sqrt(gamma * H) < lambda.

    lambda starts at `adaedl_lambda` and moves by `adapt_rate` x 0.1 x (target_acceptance - observed
    acceptance rate) after each round, within [0, 1]: low acceptance raises lambda, stopping earlier.
    """

    def reset(self) -> None:
        self.lam = self.config.adaedl_lambda

    def should_stop(self, state: DraftState) -> bool:
        bound = 1.0 - math.sqrt(self.config.adaedl_gamma * state.shannon_nats[-1])
        return bound < self.lam

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        delta = 0.1 * self.config.adapt_rate * (self.config.target_acceptance - feedback.acceptance_rate)
        self.lam = min(1.0, max(0.0, self.lam + delta))

    @property
    def threshold(self) -> float:
        return self.lam
