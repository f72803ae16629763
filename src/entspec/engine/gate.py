"""`SpeculationGate`: draft nothing in a round when drafting does not pay.

Prices: `entspec.engine.round_cost.RoundCost` (a round that drafts n tokens costs ``v(n + 1) + n c`` one-token
verifier calls, with the measured verify curve when given); a round of plain decoding emits 1 token per unit.

Decision rule, asked once before each round:

* **Open** (the start of every generation): every round drafts as the rule decides, as without a gate. The gate
  keeps exponential moving sums (decay ``gate_memory`` per speculative round) of emitted tokens and of round cost;
  when their ratio R = tokens / cost falls below ``gate_margin`` the gate closes.
* **Closed**: rounds draft nothing (the verifier decodes one token, as plain decoding does, with no drafter step;
  the drafter's cache falls behind and its next step catches up over every committed token in one forward).
  After ``backoff`` such rounds one round is a probe: the first probe after closing drafts what the rule asks
  (speculation paid until recently, so a full round is the informative test), later ones one token.
* **The probe alone decides**: if the probe round's own rate (accepted + 1) / cost is at least the margin, the
  gate reopens with fresh sums (the prior plus the probe); otherwise the backoff doubles, up to ``MAX_BACKOFF``
  rounds. A decayed history of bad rounds therefore never keeps the gate shut once speculation pays again.

With a useless drafter this costs one drafted token per ``MAX_BACKOFF + 1`` rounds. Losslessness is untouched: a
zero-draft round is a verifier step, and the rule (and the gate) only decide how much to draft, never what is
emitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .round_cost import RoundCost

if TYPE_CHECKING:
    from .config import EntropyConfig

MAX_BACKOFF = 16


class SpeculationGate:
    def __init__(self, config: EntropyConfig) -> None:
        self.enabled = config.gate
        self.memory = config.gate_memory
        self.margin = config.gate_margin
        self.round_cost = RoundCost.of(config)
        self.reset()

    def reset(self) -> None:
        """New generation: open, with the prior of one speculative round that had one accepted token."""
        self._restart()
        self.skipped = 0  # rounds without drafting since closing or the last probe
        self.backoff = 1  # rounds to skip before the next probe
        self.failed_probes = 0
        self.probing = False

    def _restart(self, tokens: float = 0.0, cost: float = 0.0) -> None:
        self.open = True
        self.tokens, self.cost = 2.0 + tokens, self.round_cost(1) + cost

    @property
    def rate(self) -> float:
        """Recent emitted tokens per unit of cost of the speculative rounds (plain decoding: 1)."""
        return self.tokens / self.cost

    def draft_limit(self, limit: int) -> int:
        """Asked once before each round that may draft ``limit >= 1`` tokens: ``limit`` while the gate is open,
        0 while it is closed (the verifier decodes one token alone), and for a probe ``limit`` (the first after
        closing) or 1."""
        if not self.enabled or self.open:
            return limit
        if self.skipped < self.backoff:
            self.skipped += 1
            return 0
        self.skipped, self.probing = 0, True
        return limit if self.failed_probes == 0 else 1

    def update(self, drafted: int, accepted: int) -> None:
        """The verdict on the last round; rounds that drafted nothing say nothing about speculation."""
        if drafted == 0:
            return
        emitted, cost = accepted + 1, self.round_cost(drafted)
        if self.probing:
            self.probing = False
            if emitted / cost >= self.margin:
                self._restart(emitted, cost)
                self.backoff, self.failed_probes = 1, 0
            else:
                self.backoff = min(2 * self.backoff, MAX_BACKOFF)
                self.failed_probes += 1
            return
        self.tokens = self.memory * self.tokens + emitted
        self.cost = self.memory * self.cost + cost
        if self.rate < self.margin:
            self.open, self.skipped = False, 0
