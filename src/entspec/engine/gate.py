"""`SpeculationGate`: draft nothing in a round when drafting does not pay.

Before a round's first drafter step the gate compares the recent rate of *speculative* rounds with plain
decoding's. In units of a one-token verifier call, a round that drafts n tokens costs ``v(n + 1) + n c``
(c: drafter step, ``cost_ratio``; v(m): the verifier call over m tokens relative to one token, the measured
``verify_curve`` when given, else ``1 + s (m - 1)`` with s = ``verify_slope``), and a round of plain decoding
emits 1 token per unit. The gate keeps exponential moving sums (decay ``gate_memory`` per speculative round)
of emitted tokens and of that cost, so the speculative rate is R = tokens / cost; while
``R >= gate_margin`` every round drafts, as without a gate. (A measured curve matters: in bf16 on a 2-core
CPU a 2-token verifier call is ~11% cheaper than a 1-token one, so a linear model overstates what drafting
costs and closes the gate where speculation still pays.)

When R falls below the margin the round drafts nothing: the verifier decodes one token, as plain decoding does, with
no drafter step, and the drafter's cache simply falls behind (its next step catches up over every
committed token in one forward). Speculation is probed again, with a one-token draft, after 1, 2, 4, ... up
to ``MAX_BACKOFF`` rounds without drafting; probes that lift R back to the margin or more reopen the gate and reset
the backoff. With a useless drafter this costs one drafted token per ``MAX_BACKOFF + 1`` rounds.

Losslessness is untouched: a zero-draft round is a verifier step, and the rule (and the gate) only decide
how much to draft, never what is emitted.
"""

from __future__ import annotations

import numpy as np

from .config import EntropyConfig

MAX_BACKOFF = 32


def verify_cost(config: EntropyConfig, tokens: int) -> float:
    """The verifier call over ``tokens`` tokens, in one-token calls: the measured curve, else linear."""
    if config.verify_curve is None:
        return 1.0 + config.verify_slope * (tokens - 1)
    m, v = zip(*config.verify_curve)
    return float(np.interp(tokens, m, v))


class SpeculationGate:
    def __init__(self, config: EntropyConfig) -> None:
        self.enabled = config.gate
        self.memory = config.gate_memory
        self.margin = config.gate_margin
        self.round_cost = [verify_cost(config, n + 1) + n * config.cost_ratio for n in range(config.max_draft_len + 1)]
        self.reset()

    def reset(self) -> None:
        """New generation: start open (prior: one speculative round with one accepted token)."""
        self.tokens, self.cost = 2.0, self.round_cost[1]
        self.skipped = 0  # rounds without drafting since the last probe
        self.backoff = 1

    @property
    def rate(self) -> float:
        """Recent emitted tokens per unit of cost of the speculative rounds (plain decoding: 1)."""
        return self.tokens / self.cost

    def draft_limit(self, limit: int) -> int:
        """Asked once before each round that may draft ``limit >= 1`` tokens: ``limit`` while the gate is open,
        0 while it is closed (the verifier decodes one token alone), 1 for a probe."""
        if not self.enabled or self.rate >= self.margin:
            return limit
        if self.skipped >= self.backoff:  # probe with one token: does speculation pay again?
            self.skipped = 0
            self.backoff = min(2 * self.backoff, MAX_BACKOFF)
            return 1
        self.skipped += 1
        return 0

    def update(self, drafted: int, accepted: int) -> None:
        """The verdict on the last round; rounds that drafted nothing say nothing about speculation."""
        if drafted == 0:
            return
        self.tokens = self.memory * self.tokens + accepted + 1
        self.cost = self.memory * self.cost + self.round_cost[drafted]
        if self.rate >= self.margin:
            self.backoff = 1
