"""What a round costs, in one-token verifier calls: the one price the speculation gate, the ``goodput`` rule and
`entspec tune` read.

A round that drafts n tokens costs ``v(n + 1) + n c``: c is one drafter step (``cost_ratio``), v(m) the verifier
call over m tokens relative to one token — the measured ``verify_curve`` when given (interpolated), else
``1 + s (m - 1)`` with s = ``verify_slope``. Plain decoding's round (n = 0) costs 1. The numbers come from the
machine's measured `entspec.replay.cost.CostModel` (seconds) through `CostModel.relative`, which `entspec tune`
writes into the configs it chooses.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RoundCost:
    """``cost(n)``: a round that drafts n tokens, in one-token verifier calls; ``marginal(n)``: one more token."""

    def __init__(self, cost_ratio: float, verify_slope: float = 0.0,
                 verify_curve: list[list[float]] | None = None) -> None:
        self.cost_ratio, self.verify_slope = cost_ratio, verify_slope
        self.curve = None if verify_curve is None else tuple(np.asarray(k, float) for k in zip(*verify_curve))

    @classmethod
    def of(cls, config: Any) -> "RoundCost":
        """From an `EntropyConfig`'s ``cost_ratio``, ``verify_slope`` and ``verify_curve``."""
        return cls(config.cost_ratio, config.verify_slope, config.verify_curve)

    def verify(self, tokens: int) -> float:
        """The verifier call over ``tokens`` tokens, relative to one token."""
        if self.curve is None:
            return 1.0 + self.verify_slope * (tokens - 1)
        return float(np.interp(tokens, *self.curve))

    def __call__(self, drafted: int) -> float:
        return self.verify(drafted + 1) + drafted * self.cost_ratio

    def marginal(self, drafted: int) -> float:
        """What drafting one more token after ``drafted`` adds to the round's cost."""
        return self(drafted + 1) - self(drafted)
