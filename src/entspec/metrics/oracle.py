"""DISCO oracle bound: how fast would the same drafter/verifier pair be with a perfect stopping rule?

DISCO (arXiv 2405.04304) defines the oracle draft length of a round as "keep drafting exactly until the
first token the verifier would reject". From a recorded trace we can replay that rule round by round.

**What the oracle does in a round** that drafted d tokens, accepted a of them and emitted e tokens:

* A rejection was seen (a < d). The oracle knows the first rejected position is a+1, so it drafts only
  the a tokens that will be accepted and lets the verifier's own token at position a+1 (greedy: argmax p,
  the same token as the correction; sampling: a draw from p, distributed as the accepted-or-corrected
  token) be the round's bonus. It emits a+1 tokens, like the actual round, for a drafter steps instead
  of d: the d − a wasted drafter steps are saved.
* Fully accepted (a = d, also a round that drafted nothing). What the drafter would have done past the
  draft is not in the trace, so the oracle is credited with the observed a tokens only. This makes the
  replayed figure a **conservative bound (a lower bound on the true oracle's speed)**: the true oracle
  would go on drafting there and merge rounds, saving verifier calls. ``unresolved_round_frac`` reports
  how many rounds are of this kind; the bound is tightest on traces with long drafts (e.g. the ``fixed``
  strategy at the draft-length cap), where few rounds end fully accepted.
* EOS or the budget cut the round (e < a + 1): the oracle drafts e − 1 tokens and emits e.

In short: oracle drafted tokens of a round = min(a, max(e − 1, 0)); verifier calls and emitted tokens
are those of the trace. Hence ``oracle_tokens_per_call`` equals the achieved one (the conservative
oracle earns only the saved drafter steps); the difference is in time.

**Sampling mode.** Acceptance is a coin flip with probability min(1, p/q). We replay the *realised*
coins, i.e. the same rule as greedy with the recorded ``accepted``: (1) it is DISCO's definition
(stop right before the first token the verifier *does* reject) applied to the draws that happened;
(2) the achieved figure is realised on the same coins, so the comparison is paired and has no extra
variance; (3) greedy and sampling share one rule. This oracle is clairvoyant about the coins, so it
bounds every causal policy, even one that knows p and q exactly. For the noise in the achieved figure,
``achieved_expected_tokens_per_call`` gives the Rao-Blackwellised version of the mean accepted tokens
(1 + accepted per call, before EOS/budget truncation) from ``accept_probs`` β_i:
E[accepted | drafts] = Σ_{j=1..d} Π_{i≤j} β_i per round (equal to the realised count in greedy; NaN
if a round lacks accept_probs).

**Time model** (the same for achieved and oracle, so the gap isolates the stopping rule)::

    time = Σ prefill_time_s + D · draft_step_s + C · (verify_call_s + overhead_call_s)

with D drafter steps, C verifier calls. Defaults are measured on the trace: draft_step_s =
Σ draft_time_s / Σ drafted, verify_call_s = Σ verify_time_s / C, overhead_call_s = the rest of the
decode time per call, (Σ round_time_s − D · draft_step_s − C · verify_call_s) / C (= the mean of
round − draft − verify unless nothing was drafted yet drafter time was spent); with them the achieved
time equals Σ prefill + Σ round_time_s exactly. ``measured_tokens_per_s`` = Σ new_tokens / Σ wall_time_s
is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from entspec.records import GenerationResult, RoundRecord

__all__ = ["oracle_bound", "oracle_draft_length", "expected_accepted"]


def oracle_draft_length(rnd: RoundRecord) -> int:
    """Drafter steps the (conservative) oracle spends in this round: min(accepted, max(emitted − 1, 0))."""
    return min(rnd.accepted, max(rnd.emitted - 1, 0))


def expected_accepted(accept_probs: list[float]) -> float:
    """E[accepted] of a draft with per-position acceptance probabilities β: Σ_j Π_{i≤j} β_i."""
    return float(np.cumprod(np.asarray(accept_probs, dtype=float)).sum()) if accept_probs else 0.0


def _expected_accepted_of(rnd: RoundRecord) -> float:
    return expected_accepted(rnd.accept_probs) if len(rnd.accept_probs) == rnd.drafted else math.nan


def oracle_bound(
    results: GenerationResult | Iterable[GenerationResult],
    draft_step_s: float | None = None,
    verify_call_s: float | None = None,
    overhead_call_s: float | None = None,
    include_prefill: bool = True,
) -> dict[str, float | int]:
    """Replay the DISCO oracle on recorded rounds and compare it with what was achieved (module docstring).

    Args:
        results: generations of one drafter/verifier pair (one stopping rule).
        draft_step_s: cost of one drafter step; default Σ draft_time_s / Σ drafted (0 if nothing drafted).
        verify_call_s: cost of one verifier call; default Σ verify_time_s / number of rounds.
        overhead_call_s: framework cost per round; default the rest of the measured round time per call.
        include_prefill: add the measured prefill time to both times.

    Returns:
        dict with ``achieved_tokens_per_s``, ``oracle_tokens_per_s``, ``oracle_gap`` (achieved / oracle,
        ≤ 1 up to rounding), ``measured_tokens_per_s``, ``achieved_tokens_per_call``,
        ``oracle_tokens_per_call``, ``achieved_expected_tokens_per_call``, ``achieved_mean_draft_length``,
        ``oracle_mean_draft_length``, ``drafted_tokens``, ``oracle_drafted_tokens``, ``verifier_calls``,
        ``new_tokens``, ``unresolved_round_frac`` and the three costs used.
    """
    trace = _Pooled.of([results] if isinstance(results, GenerationResult) else list(results), include_prefill)
    costs = _costs(trace, draft_step_s, verify_call_s, overhead_call_s)
    achieved = trace.tokens_per_s(trace.drafted, costs)
    oracle = trace.tokens_per_s(trace.oracle_drafted, costs)
    return {
        "achieved_tokens_per_s": achieved,
        "oracle_tokens_per_s": oracle,
        "oracle_gap": achieved / oracle if oracle == oracle and oracle > 0 else math.nan,
        "measured_tokens_per_s": trace.new_tokens / trace.wall_s if trace.wall_s > 0 else math.nan,
        **_per_call(trace),
        "drafted_tokens": trace.drafted,
        "oracle_drafted_tokens": trace.oracle_drafted,
        "verifier_calls": trace.calls,
        "new_tokens": trace.new_tokens,
        "unresolved_round_frac": (
            float(np.mean([r.accepted == r.drafted for r in trace.rounds])) if trace.calls else math.nan
        ),
        "draft_step_s": float(costs.draft_step_s),
        "verify_call_s": float(costs.verify_call_s),
        "overhead_call_s": float(costs.overhead_call_s),
    }


@dataclass
class _Pooled:
    """The rounds of several generations pooled, with the totals the time model needs."""

    rounds: list[RoundRecord]
    new_tokens: int
    drafted: int  # drafter steps taken
    oracle_drafted: int  # drafter steps the oracle takes
    prefill_s: float  # 0 without include_prefill
    wall_s: float

    @classmethod
    def of(cls, results: list[GenerationResult], include_prefill: bool) -> "_Pooled":
        rounds = [r for res in results for r in res.rounds]
        return cls(rounds=rounds, new_tokens=sum(len(res.new_tokens) for res in results),
                   drafted=sum(r.drafted for r in rounds), oracle_drafted=sum(oracle_draft_length(r) for r in rounds),
                   prefill_s=sum(res.prefill_time_s for res in results) if include_prefill else 0.0,
                   wall_s=sum(res.wall_time_s for res in results))

    @property
    def calls(self) -> int:
        return len(self.rounds)

    def tokens_per_s(self, drafter_steps: int, costs: _Costs) -> float:
        """New tokens per second of the time model with ``drafter_steps`` drafter steps (module docstring)."""
        time = self.prefill_s + drafter_steps * costs.draft_step_s \
            + self.calls * (costs.verify_call_s + costs.overhead_call_s)
        return self.new_tokens / time if self.calls and time > 0 else math.nan


@dataclass
class _Costs:
    draft_step_s: float
    verify_call_s: float
    overhead_call_s: float


def _costs(trace: _Pooled, draft_step_s: float | None, verify_call_s: float | None,
           overhead_call_s: float | None) -> _Costs:
    """The costs of the time model; each one not given is measured on the trace (module docstring)."""
    rounds, calls, drafted = trace.rounds, trace.calls, trace.drafted
    if draft_step_s is None:
        draft_step_s = sum(r.draft_time_s for r in rounds) / drafted if drafted else 0.0
    if verify_call_s is None:
        verify_call_s = sum(r.verify_time_s for r in rounds) / calls if calls else math.nan
    if overhead_call_s is None:  # the rest of the measured round time, so achieved time = Σ round_time_s
        rest = sum(r.round_time_s for r in rounds) - drafted * draft_step_s - calls * verify_call_s
        overhead_call_s = rest / calls if calls else math.nan
    return _Costs(draft_step_s, verify_call_s, overhead_call_s)


def _per_call(trace: _Pooled) -> dict[str, float]:
    """Tokens and drafter steps per verifier call, achieved and oracle (NaN without rounds)."""
    calls = trace.calls
    if not calls:
        return dict.fromkeys(("achieved_tokens_per_call", "oracle_tokens_per_call",
                              "achieved_expected_tokens_per_call", "achieved_mean_draft_length",
                              "oracle_mean_draft_length"), math.nan)
    return {
        "achieved_tokens_per_call": trace.new_tokens / calls,
        "oracle_tokens_per_call": trace.new_tokens / calls,  # the conservative oracle keeps every call
        "achieved_expected_tokens_per_call": float(np.mean([1.0 + _expected_accepted_of(r) for r in trace.rounds])),
        "achieved_mean_draft_length": trace.drafted / calls,
        "oracle_mean_draft_length": trace.oracle_drafted / calls,
    }
