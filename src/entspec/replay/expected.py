"""Expected-value replay and the sampling oracle on sampling traces (:mod:`entspec.replay.sampled`).

**This is an expectation, not a realisation.** Given a sampled trajectory, the verdicts of speculative sampling are
independent Bernoulli(a_t) (a_t = min(1, q_t(y_t) / p_t(y_t)), mean β_t); `expected_replay` averages a rule's
rounds over ``draws`` Monte-Carlo draws of those verdicts (`SampledTrace.realise`), each replayed by the
registered rule through the engine's round logic (`entspec.replay.engine.replay`). Adaptive rules (and the
speculation gate) therefore hear the verdicts a real run could give them, one draw at a time: a rule is a
non-linear function of its feedback, so feeding it the *expected* feedback would not give its expected
behaviour. Every configuration sees the same draws (common random numbers), so comparisons between
configurations are sharper than their absolute values. Averaged over trajectories as well, the result estimates
what the engine does on average at this temperature; the tests check it against real generations.

`sampling_oracle` is the best draft-length schedule under the same model: a round at t that drafts j tokens emits
A + 1 tokens with P(A >= i) = Π_{t <= s < t + i} a_s, so the minimum expected time is a dynamic programme over
positions, ``best[t] = min_j round_time(j) + Σ_i P(A = i) best[t + i + 1]``, with or without a cap on j. It
chooses j when the round starts; a rule decides token by token and sees each drafted token's statistics, which
carry information about its verdict, so a rule can beat this schedule (share of the oracle > 1). The mean of
`entspec.replay.engine.true_oracle` over realisations (it knows the verdicts) is a true lower bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..engine.config import EntropyConfig
from .cost import CostModel
from .engine import OracleResult, check_replayable, plain_decoding, replay, true_oracle
from .sampled import SampledTrace

DRAWS = 8  # Monte-Carlo draws of the verdicts per trajectory (`entspec tune --draws`)


@dataclass
class ExpectedResult:
    """A rule on one trajectory: per-draw rounds, time and drafted tokens, and their means."""

    tokens: int  # the trajectory's length (every draw emits it)
    rounds: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)

    @property
    def mean_rounds(self) -> float:
        return float(np.mean(self.rounds))

    @property
    def mean_time_s(self) -> float:
        return float(np.mean(self.time_s))

    @property
    def tokens_per_round(self) -> float:
        """Expected tokens per verifier call (ratio of means over draws)."""
        return self.tokens / self.mean_rounds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.mean_time_s


def realisations(trace: SampledTrace, draws: int = DRAWS):
    """The ``draws`` realisations of a trace, built once per trace and draw count (replay reads them often)."""
    cache = trace.__dict__.setdefault("_realisations", {})
    if draws not in cache:
        cache[draws] = [trace.realise(d) for d in range(draws)]
    return cache[draws]


def expected_replay(trace: SampledTrace, config: EntropyConfig, cost: CostModel, draws: int = DRAWS,
                    max_new_tokens: int | None = None) -> ExpectedResult:
    """``config``'s rule on ``draws`` draws of the trajectory's verdicts (module docstring)."""
    if draws < 1:
        raise ValueError(f"draws: must be >= 1 (got {draws})")
    budget = trace.meta.max_new_tokens if max_new_tokens is None else max_new_tokens
    out = ExpectedResult(tokens=min(len(trace), budget))
    for realised in realisations(trace, draws):
        r = replay(realised, config, cost, max_new_tokens)
        out.rounds.append(r.verifier_calls)
        out.time_s.append(r.time_s)
        out.drafted.append(r.drafter_steps)
        out.accepted.append(sum(r.accepted))
    return out


def sampling_oracle(trace: SampledTrace, cost: CostModel, cap: int | None = None,
                    max_new_tokens: int | None = None, survival: np.ndarray | None = None) -> OracleResult:
    """The schedule of draft lengths with the least expected time (module docstring); ``drafted`` is its first
    choice at every position, ``time_s`` the expected time (prefill included). ``survival``: per-position
    acceptance probabilities to use instead of the trace's a_t (e.g. its β_t)."""
    budget_total = trace.meta.max_new_tokens if max_new_tokens is None else max_new_tokens
    n_out = min(len(trace), budget_total)
    accept = (trace.accept_prob if survival is None else np.asarray(survival, dtype=float))[:n_out].tolist()
    best = [0.0] * (n_out + 1)
    choice = [0] * (n_out + 1)
    for t in range(n_out - 1, -1, -1):
        top = min(budget_total - t - 1, n_out - t - 1)
        if cap is not None:
            top = min(top, cap)
        first = t == 0
        alive, rejected_part = 1.0, 0.0  # P(A >= j); Σ_{i<j} P(A = i) best[t + i + 1]
        value, arg = cost.round_time(0, first) + best[t + 1], 0
        for j in range(1, top + 1):
            a = accept[t + j - 1]
            rejected_part += alive * (1.0 - a) * best[t + j]  # rejected at the j-th drafted token: A = j - 1
            alive *= a
            v = cost.round_time(j, first) + rejected_part + alive * best[t + j + 1]
            if v < value:
                value, arg = v, j
            if alive < 1e-12:  # drafting further only adds cost
                break
        best[t], choice[t] = value, arg
    return OracleResult([choice[t] for t in range(n_out)], cost.prefill(trace.meta.prompt_len) + best[0], n_out)


def clairvoyant_oracle(trace: SampledTrace, cost: CostModel, cap: int | None = None, draws: int = DRAWS) -> float:
    """Mean over the draws of the true oracle of each realisation (it knows the verdicts): a lower bound on every
    rule's expected time."""
    return float(np.mean([true_oracle(r, cost, cap=cap).time_s for r in realisations(trace, draws)]))


def check_sampled_replayable(trace: SampledTrace, config: EntropyConfig) -> None:
    """Refuse what the trace cannot answer (one line naming the field): its cap and entropy orders."""
    check_replayable(trace.realise(0), config)


def predicted_sampled(traces: list[SampledTrace], config: EntropyConfig, cost: CostModel,
                      draws: int = DRAWS) -> dict[str, float]:
    """Ratio-of-means figures of one rule over sampling traces: expected tokens per round and per second, speedup
    over plain decoding, share of the sampling oracle at the rule's cap and uncapped, and of the clairvoyant bound."""
    tokens = rounds = rule = plain = 0.0
    oracle_cap = oracle = bound = 0.0
    for t in traces:
        e = expected_replay(t, config, cost, draws)
        tokens, rounds, rule = tokens + e.tokens, rounds + e.mean_rounds, rule + e.mean_time_s
        plain += plain_decoding(realisations(t, draws)[0], cost).time_s
        oracle_cap += sampling_oracle(t, cost, cap=config.max_draft_len).time_s
        oracle += sampling_oracle(t, cost).time_s
        bound += clairvoyant_oracle(t, cost, config.max_draft_len, draws)
    return {"tokens_per_round": tokens / rounds, "tokens_per_s": tokens / rule, "speedup": plain / rule,
            "of_oracle_at_cap": oracle_cap / rule, "of_oracle": oracle / rule, "of_clairvoyant_at_cap": bound / rule,
            "oracle_speedup": plain / oracle if oracle > 0 else math.nan}
