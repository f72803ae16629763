"""The per-round decisions of speculative decoding, in one place for every executor.

The live drafter (`entspec.engine.drafter`), the batched engine (`entspec.engine.batch`) and trace replay
(`entspec.replay.engine`) all decide a round's draft the same way: how many tokens the round may draft (the
cap, the token budget, the speculation gate and its probes) and, after each drafted token, whether drafting
stops and why. They call these functions (and `feedback` after the verdict), so replay and the engines agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import EntropyConfig
from .gate import SpeculationGate
from ..rules import DraftState, RoundFeedback, StoppingCriterion


@dataclass(frozen=True)
class DraftLimit:
    """How many tokens a round may draft, and the stop reason when drafting reaches that many."""

    tokens: int
    at_limit: str  # "max_draft_len", "max_new_tokens", "probe" (the gate's short probe), "gate" (no drafting) or
    # "deferred" (the first round with drafter_prefill="deferred": the verifier's prefill gives the first token alone)


def draft_limit(config: EntropyConfig, gate: SpeculationGate, budget: int, first: bool = False) -> DraftLimit:
    """The round's draft limit with ``budget`` tokens left to emit: at most ``budget - 1`` drafted tokens (the
    verifier always adds one of its own), at most ``max_draft_len``, and what the gate allows; nothing in the
    ``first`` round of a generation whose drafter prefill is deferred."""
    cap = min(config.max_draft_len, budget - 1)
    if cap < 1:
        return DraftLimit(0, "max_new_tokens")
    if first and config.drafter_prefill == "deferred":
        return DraftLimit(0, "deferred")
    allowed = gate.draft_limit(cap)
    if allowed == 0:
        return DraftLimit(0, "gate")
    if allowed < cap:
        return DraftLimit(allowed, "probe")
    return DraftLimit(cap, "max_draft_len" if cap == config.max_draft_len else "max_new_tokens")


def stop_reason(config: EntropyConfig, rule: StoppingCriterion, state: DraftState, is_eos: bool,
                limit: DraftLimit) -> str | None:
    """After the last token in ``state`` was drafted: why drafting stops ("eos", "criterion", the limit's
    reason), or None to draft on. The token that trips a rule is still proposed."""
    if is_eos:
        return "eos"
    if len(state) >= config.min_draft_len and rule.should_stop(state):
        return "criterion"
    if len(state) >= limit.tokens:
        return limit.at_limit
    return None


def drafter_steps(config: EntropyConfig, drafted: int, limit: DraftLimit, reads: bool) -> int:
    """The drafter steps of a round that kept ``drafted`` tokens: with chunked reading (``draft_chunk`` m, a rule
    that reads) the steps run to the end of the chunk the stop fell in, at most the limit."""
    chunk = config.draft_chunk if reads else 1
    return min(-(-drafted // chunk) * chunk, max(limit.tokens, drafted))


def feedback(rule: StoppingCriterion, gate: SpeculationGate, state: DraftState, accepted: int) -> None:
    """The verifier accepted the first ``accepted`` of the round's ``len(state)`` drafted tokens: the rule and the
    gate hear it (rounds that drafted nothing too)."""
    rule.update(RoundFeedback(len(state), accepted, list(state.entropies), list(state.token_probs)))
    gate.update(len(state), accepted)


def cut_emitted(tokens: list[int], budget: int, eos: set[int]) -> list[int]:
    """A round's emitted tokens, truncated after the first EOS and to the ``budget`` tokens left."""
    for i, t in enumerate(tokens):
        if t in eos:
            tokens = tokens[: i + 1]
            break
    return tokens[:budget]
