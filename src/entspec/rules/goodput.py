"""EXPERIMENTAL: the cost-aware ``goodput`` rule and the calibrations `entspec tune` fits for it.

By our own bench it does not beat the simpler rules (docs/replay.md); it stays for research on cost-aware stopping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..engine.entropy import ENTROPY_TYPES
from ..engine.round_cost import RoundCost
from ..validate import bounds, check_knots
from .base import DraftState, RoundFeedback, StoppingCriterion, register

if TYPE_CHECKING:
    from ..replay.trace import Trace

__all__ = ["Goodput"]


@dataclass(frozen=True)
class GoodputParams:
    """Acceptance of a drafted token = sigmoid(calib_intercept + calib_slope * H + calib_prob * q), fitted on
    traces by `entspec tune`, updated online by SGD at rate calib_lr; or an isotonic curve ``calib_curve``
    ([[H, beta], ...], H ascending). ``next_*``: the next token's acceptance from the current token's statistics
    (None: the current token's beta stands in)."""

    goodput_margin: float = field(default=1.0, metadata=bounds(min=0))  # continue while gain > margin * rate * cost
    calib_intercept: float = field(default=2.5, metadata=bounds(finite=True))
    calib_slope: float = field(default=-1.5, metadata=bounds(finite=True))
    calib_prob: float = field(default=0.0, metadata=bounds(finite=True))
    calib_lr: float = field(default=0.05, metadata=bounds(min=0))
    calib_curve: list[list[float]] | None = None
    next_intercept: float | None = field(default=None, metadata=bounds(finite=True))
    next_slope: float = field(default=0.0, metadata=bounds(finite=True))
    next_prob: float = field(default=0.0, metadata=bounds(finite=True))

    def __post_init__(self) -> None:
        check_knots("calib_curve", self.calib_curve, "entropy, probability", strict=False)


@register("goodput", reads=("entropies", "token_probs"), threshold="goodput_margin", params=GoodputParams,
          sweep={"goodput_margin": (0.4, 0.55, 0.7, 0.85, 1.0, 1.2, 1.5), "max_draft_len": (12, 20)})
class Goodput(StoppingCriterion):
    """Draft one more token while it is expected to add tokens faster than the generation is producing them.

    Acceptance of a drafted token with entropy H and probability q is predicted as
    beta = sigmoid(a + b H + d q) (a calibration fitted on traces, d = 0 for entropy alone; a, b, d then
    follow the verifier's verdicts by online logistic-regression SGD). After j drafted tokens the whole
    draft survives with probability P_j = prod_i beta_i; one more token adds P_j * beta_j expected tokens (the
    next token's statistics are not known yet; the last ones stand in) and costs c + s (``cost_ratio`` +
    ``verify_slope``, or the measured ``verify_curve``'s step: `RoundCost.marginal`, in one-token verifier calls).
    Stop unless P_j * beta_j > margin * R * (c + s), with R the generation's rate so far in tokens per
    verifier-call time (rounds priced by the same `RoundCost`; prior: plain decoding, 1). With margin 1 this is the marginal-value rule that maximises long-run
    tokens per second (docs/replay.md).
    """

    def reset(self) -> None:
        c = self.config
        self.now = [c.calib_intercept, c.calib_slope, c.calib_prob]  # beta of a drafted token from its own stats
        self.curve = None if c.calib_curve is None else ([k[0] for k in c.calib_curve], [k[1] for k in c.calib_curve])
        self.offset = 0.0  # online logit offset of the isotonic curve
        self.next = None if c.next_intercept is None else [c.next_intercept, c.next_slope, c.next_prob]
        self.tokens, self.time = 1.0, 1.0  # one pseudo-round of plain decoding: R starts at 1
        self.cost = RoundCost.of(c)

    @staticmethod
    def _sigmoid(w: list[float], entropy: float, prob: float) -> float:
        z = w[0] + w[1] * entropy + w[2] * prob
        return 1.0 / (1.0 + math.exp(-z)) if z > -30 else 0.0

    def accept_prob(self, entropy: float, prob: float) -> float:
        if self.curve is None:
            return self._sigmoid(self.now, entropy, prob)
        beta = min(max(float(np.interp(entropy, *self.curve)), 1e-3), 1 - 1e-3)
        if self.offset == 0.0:
            return beta
        z = math.log(beta / (1 - beta)) + self.offset
        return 1.0 / (1.0 + math.exp(-z))

    def should_stop(self, state: DraftState) -> bool:
        survival = 1.0
        for h, q in zip(state.entropies, state.token_probs):
            survival *= self.accept_prob(h, q)
        h, q = state.entropies[-1], state.token_probs[-1]
        next_beta = self._sigmoid(self.next, h, q) if self.next else self.accept_prob(h, q)
        return survival * next_beta <= self.threshold * self.cost.marginal(len(state))

    def update(self, feedback: RoundFeedback) -> None:
        self.tokens += feedback.accepted + 1
        self.time += self.cost(feedback.drafted)
        lr = self.config.calib_lr
        stats = list(zip(feedback.entropies, feedback.token_probs))
        for i, (h, q) in enumerate(stats[: feedback.accepted + 1]):  # verdicts up to the first rejection
            accepted = i < feedback.accepted
            err = accepted - self.accept_prob(h, q)
            if self.curve is None:
                _sgd(self.now, lr, err, h, q)
            else:
                self.offset += lr * err
            if self.next and i > 0:  # token i's verdict, predicted from token i - 1 (accepted) before it was drafted
                hp, qp = stats[i - 1]
                _sgd(self.next, lr, accepted - self._sigmoid(self.next, hp, qp), hp, qp)

    @property
    def threshold(self) -> float:
        """The bar a drafted token's expected gain per unit cost must clear: margin x current rate."""
        return self.config.goodput_margin * self.tokens / self.time


def _sgd(w: list[float], lr: float, err: float, entropy: float, prob: float) -> None:
    """One step of online logistic regression on (1, H, q)."""
    w[0] += lr * err
    w[1] += lr * err * entropy
    w[2] += lr * err * prob


# --- calibrations fitted on greedy traces (`entspec tune`) ----------------------------------------------


def fit_calibration(traces: list[Trace], entropy_type: str = "shannon", with_prob: bool = False) -> dict[str, float]:
    """Logistic regression (scikit-learn) of "the drafter's greedy token is the verifier's" on its entropy
    (nats) and, ``with_prob``, the drafted token's probability: the goodput rule's calibration."""
    from sklearn.linear_model import LogisticRegression

    kind = ENTROPY_TYPES.index(entropy_type)
    h = np.concatenate([t.entropy[:, kind] for t in traces]).astype(float)
    q = np.concatenate([t.token_prob for t in traces]).astype(float)
    y = np.concatenate([t.match for t in traces]).astype(int)
    if len(np.unique(y)) < 2:  # a drafter always right (or always wrong): a flat, clipped calibration
        p = float(np.clip(y.mean(), 0.01, 0.99))
        return {"calib_intercept": float(np.log(p / (1 - p))), "calib_slope": 0.0, "calib_prob": 0.0}
    features = np.column_stack([h, q]) if with_prob else h[:, None]
    model = LogisticRegression(C=1e4, max_iter=1000).fit(features, y)
    coef = model.coef_[0]
    return {"calib_intercept": round(float(model.intercept_[0]), 4), "calib_slope": round(float(coef[0]), 4),
            "calib_prob": round(float(coef[1]), 4) if with_prob else 0.0}


def fit_isotonic_calibration(traces: list[Trace], entropy_type: str = "shannon", knots: int = 12) -> dict:
    """Isotonic regression (scikit-learn) of the drafter's greedy agreement on its entropy, decreasing,
    summarised as ``knots`` [entropy, probability] points at entropy quantiles (the ``calib_curve``)."""
    from sklearn.isotonic import IsotonicRegression

    kind = ENTROPY_TYPES.index(entropy_type)
    h = np.concatenate([t.entropy[:, kind] for t in traces]).astype(float)
    y = np.concatenate([t.match for t in traces]).astype(float)
    model = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(h, y)
    grid = np.unique(np.quantile(h, np.linspace(0, 1, knots)))
    return {"calib_curve": [[round(float(x), 4), round(float(p), 4)] for x, p in zip(grid, model.predict(grid))]}


def fit_next_calibration(traces: list[Trace], entropy_type: str = "shannon", with_prob: bool = False) -> dict:
    """Logistic regression of "the drafter is right at t + 1" on its statistics at t, over positions where it
    is right at t (the goodput rule's prediction of the next token before drafting it)."""
    from sklearn.linear_model import LogisticRegression

    kind = ENTROPY_TYPES.index(entropy_type)
    h, q, y = [], [], []
    for t in traces:
        right = t.match[:-1]
        h.append(t.entropy[:-1, kind][right])
        q.append(t.token_prob[:-1][right])
        y.append(t.match[1:][right])
    h, q, y = np.concatenate(h).astype(float), np.concatenate(q).astype(float), np.concatenate(y).astype(int)
    if len(np.unique(y)) < 2:
        return {"next_intercept": None, "next_slope": 0.0, "next_prob": 0.0}
    features = np.column_stack([h, q]) if with_prob else h[:, None]
    model = LogisticRegression(C=1e4, max_iter=1000).fit(features, y)
    coef = model.coef_[0]
    return {"next_intercept": round(float(model.intercept_[0]), 4), "next_slope": round(float(coef[0]), 4),
            "next_prob": round(float(coef[1]), 4) if with_prob else 0.0}
