"""Replay a stopping rule on a greedy trace: the rounds the engine would produce, with no model call.

`replay` runs the *registered* `StoppingCriterion` (adaptive ones included: they get the same
`RoundFeedback`) through the same round logic as :class:`entspec.engine.decoder.EntropyBasedSpeculativeDecoder`:

1. a round at output position s may draft ``min(max_draft_len, budget - 1)`` tokens;
2. drafted token i is the drafter's greedy token after the committed prefix while every earlier token of
   the round was right, and the drafter's own continuation after its first wrong token afterwards;
3. no token is drafted when the speculation gate is closed (:mod:`entspec.engine.gate`); otherwise drafting stops
   at EOS, when the rule says so (after ``min_draft_len`` tokens), or at the limit;
4. the verifier accepts the leading correct tokens and adds its own: the round emits ``accepted + 1``
   tokens (fewer at the end of the output);
5. the rule and the gate hear ``(drafted, accepted, entropies)``.

Time comes from a :class:`~entspec.replay.cost.CostModel`. `true_oracle` is the fastest schedule any
stopping rule could reach on the same trace (a shortest path over output positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.config import EntropyConfig
from ..engine.entropy import ENTROPY_TYPES
from ..engine.gate import SpeculationGate
from ..records import GenerationResult, RoundRecord
from ..engine.round import draft_limit, drafter_steps, feedback, stop_reason
from ..rules import RULES, DraftState, build_criterion
from .cost import CostModel
from .trace import Trace, TraceLists, nats_to_unit

_SHANNON = ENTROPY_TYPES.index("shannon")


@dataclass
class ReplayResult:
    """The rounds a rule produces on one trace (one entry per verifier call) and their modelled time."""

    drafted: list[int]
    accepted: list[int]
    emitted: list[int]
    stop_reasons: list[str]
    entropies: list[list[float]]
    thresholds: list[float | None]
    prefill_s: float
    round_s: list[float]
    steps: list[int] = field(default_factory=list)  # drafter steps per round (more than drafted when chunked)

    @property
    def new_tokens(self) -> int:
        return sum(self.emitted)

    @property
    def verifier_calls(self) -> int:
        return len(self.drafted)

    @property
    def drafter_steps(self) -> int:
        return sum(self.steps)

    @property
    def time_s(self) -> float:
        return self.prefill_s + sum(self.round_s)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.time_s if self.time_s > 0 else float("nan")

    def rounds(self) -> list[tuple[int, int, int]]:
        """``(drafted, accepted, emitted)`` per round: what the replay test compares with the engine."""
        return list(zip(self.drafted, self.accepted, self.emitted))

    def to_generation_result(self, trace: Trace, cost: CostModel) -> GenerationResult:
        """The replay as a `GenerationResult` with modelled times, for the metrics in :mod:`entspec.metrics`."""
        records = []
        for i, (d, a, e) in enumerate(self.rounds()):
            draft_s = self.steps[i] * cost.draft_step_s
            verify_s = cost.verify(d if i == 0 else d + 1)
            records.append(RoundRecord(drafted=d, accepted=a, emitted=e, entropies=self.entropies[i],
                                       stop_reason=self.stop_reasons[i], draft_time_s=draft_s,
                                       verify_time_s=verify_s, round_time_s=self.round_s[i],
                                       accept_probs=[1.0] * a + [0.0] * (d - a), threshold=self.thresholds[i]))
        return GenerationResult(new_tokens=trace.output[: self.new_tokens].tolist(), rounds=records,
                                prompt_len=trace.meta.prompt_len, wall_time_s=self.time_s,
                                prefill_time_s=self.prefill_s,
                                time_to_first_token_s=self.prefill_s + (self.round_s[0] if self.round_s else 0.0),
                                finish_reason="eos" if _ends_with_eos(trace) else "length", method="replay")


def check_replayable(trace: Trace, config: EntropyConfig) -> None:
    """Refuse settings the trace cannot answer, with one line naming the field."""
    if config.max_draft_len > trace.meta.cap:
        raise ValueError(f"max_draft_len: {config.max_draft_len} exceeds the trace's cap {trace.meta.cap} "
                         f"({trace.meta.prompt_id}); record traces with a larger --cap")
    if config.entropy_type == "renyi" and config.renyi_alpha != trace.meta.renyi_alpha:
        raise ValueError(f"renyi_alpha: the trace holds Rényi entropies of order {trace.meta.renyi_alpha}")
    if config.entropy_type == "topk" and config.entropy_topk != trace.meta.entropy_topk:
        raise ValueError(f"entropy_topk: the trace holds top-{trace.meta.entropy_topk} entropies")
    if (config.drafter_context or 0) != trace.meta.drafter_context:
        window = trace.meta.drafter_context or "none (the whole sequence)"
        raise ValueError(f"drafter_context: {config.drafter_context} but the trace of {trace.meta.prompt_id} was "
                         f"recorded with drafter window {window}; record traces with `entspec trace "
                         f"--drafter-context {config.drafter_context or 0}`")


class TraceRound:
    """What one round drafts on a greedy trace from output position ``pos`` (module docstring, step 2): the
    drafter's greedy token at each position while the round is still right, its own continuation after its first
    wrong token. `draft` adds the next token's statistics to the round's `DraftState` and returns the token;
    ``accepted`` counts the leading right ones. Batch replay (`entspec.replay.batch`) drafts its rows one
    lock-step token at a time with it. ``kind``: the configured entropy type's index in ``ENTROPY_TYPES``;
    ``scale``: nats to the configured unit."""

    def __init__(self, col: TraceLists, pos: int, kind: int, scale: float) -> None:
        self.col, self.pos, self.kind, self.scale = col, pos, kind, scale
        self.drafted = self.accepted = 0
        self._wrong, self._k = -1, 0  # the continuation row once the round has drafted a wrong token; its next token

    def draft(self, state: DraftState) -> int:
        col = self.col
        if self._wrong < 0:
            t = self.pos + self.drafted
            token, prob, h = col.draft_token[t], col.token_prob[t], col.entropy[t]
            if token == col.output[t]:
                self.accepted += 1
            else:
                self._wrong, self._k = col.cont_row[t], 0
        else:
            if self._k >= col.steps:
                raise ValueError(f"max_draft_len: the trace's continuations hold {col.steps} tokens")
            row, k = self._wrong, self._k
            token, prob, h = col.cont_token[row][k], col.cont_prob[row][k], col.cont_entropy[row][k]
            self._k += 1
        self.drafted += 1
        state.entropies.append(h[self.kind] * self.scale)
        state.token_probs.append(prob)
        state.shannon_nats.append(h[_SHANNON])
        return token


def replay(trace: Trace, config: EntropyConfig, cost: CostModel, max_new_tokens: int | None = None) -> ReplayResult:
    """The rounds ``config``'s rule produces on ``trace`` (module docstring), timed by ``cost``."""
    check_replayable(trace, config)
    col = trace.lists
    rule = build_criterion(config)
    rule.reset()
    reads = bool(RULES[config.strategy].reads)  # chunked reading applies to rules that read
    gate = SpeculationGate(config)
    scale = nats_to_unit(config.entropy_unit)
    kind = ENTROPY_TYPES.index(config.entropy_type)
    budget_total = trace.meta.max_new_tokens if max_new_tokens is None else max_new_tokens
    n_out = min(len(col.output), budget_total)
    # A deferred drafter prefill is no part of the prefill: it runs in the first round that drafts, over the
    # committed sequence then. The drafter's cache is followed as the engine keeps it (`_DrafterWindow`).
    deferred = config.drafter_prefill == "deferred"
    window = _DrafterWindow(config.drafter_context, None if deferred else trace.meta.prompt_len)
    out = ReplayResult([], [], [], [], [], [], cost.prefill(trace.meta.prompt_len, with_drafter=not deferred,
                                                            drafter_window=config.drafter_context), [])
    pos = 0
    while pos < n_out:
        budget = budget_total - pos
        limit = draft_limit(config, gate, budget, first=pos == 0)
        out.thresholds.append(rule.threshold)
        state = DraftState()
        walk = TraceRound(col, pos, kind, scale)
        stop = "none" if limit.tokens >= 1 else limit.at_limit
        while walk.drafted < limit.tokens:
            token = walk.draft(state)
            reason = stop_reason(config, rule, state, token in col.eos, limit)
            if reason is not None:
                stop = reason
                break
        drafted, accepted = walk.drafted, walk.accepted
        emitted = min(accepted + 1, n_out - pos)
        feedback(rule, gate, state, accepted)
        out.drafted.append(drafted)
        out.accepted.append(accepted)
        out.emitted.append(emitted)
        out.stop_reasons.append(stop)
        out.entropies.append(state.entropies)
        out.steps.append(drafter_steps(config, drafted, limit, reads))
        out.round_s.append(cost.round_time(drafted, first=pos == 0, steps=out.steps[-1]))
        if out.steps[-1]:
            prefilled = window.draft(trace.meta.prompt_len + pos, out.steps[-1], accepted)
            out.round_s[-1] += cost.model_prefill("drafter", prefilled) if prefilled else 0.0
        pos += emitted
    return out


class _DrafterWindow:
    """The single-sequence drafter's cache as `entspec.engine.drafter.EntropyBasedDrafter` keeps it: filled by the
    prefill (``prompt_len``; None when deferred: by the first round that drafts), with a ``window`` N rebuilt on the
    last N committed tokens at the start of a drafting round once it holds 2N. `draft` says how many tokens a round
    prefills (0 when none): replay charges the drafter's prefill of that many to the round."""

    def __init__(self, window: int | None, prompt_len: int | None) -> None:
        self.window = window
        self.start = max(0, prompt_len - window) if window and prompt_len else 0
        self.cached = None if prompt_len is None else prompt_len - self.start

    def draft(self, committed: int, steps: int, accepted: int) -> int:
        """A round that runs ``steps`` drafter steps after ``committed`` tokens, of which ``accepted`` are kept."""
        prefilled = 0
        if self.cached is None or (self.window and self.cached >= 2 * self.window):
            self.start = max(0, committed - self.window) if self.window else 0
            prefilled = committed - self.start
        fed = committed - self.start + steps - 1  # the catch-up, then each drafted token but the last
        self.cached = min(fed, committed + accepted - self.start)
        return prefilled


def _ends_with_eos(trace: Trace) -> bool:
    return len(trace) > 0 and int(trace.output[-1]) in trace.meta.eos_token_ids


# ------------------------------------------------------------------------------------------ the oracle


@dataclass
class OracleResult:
    """The fastest schedule for a trace: draft lengths chosen knowing where the drafter will be wrong."""

    drafted: list[int]
    time_s: float
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.time_s if self.time_s > 0 else float("nan")

    @property
    def verifier_calls(self) -> int:
        return len(self.drafted)


def true_oracle(trace: Trace, cost: CostModel, cap: int | None = None,
                max_new_tokens: int | None = None) -> OracleResult:
    """Minimum time to emit the trace's output (../shared/references.md, "The true oracle").

    A round at position t that drafts j tokens emits ``min(j, a_t) + 1`` tokens (a_t: the drafter's
    agreement run from t) and costs ``cost.round_time(j)``; drafting past a_t never helps, so
    j <= min(a_t, cap, budget - 1). ``best[t] = min_j round_time(j) + best[t + j + 1]``, solved backwards.
    """
    budget_total = trace.meta.max_new_tokens if max_new_tokens is None else max_new_tokens
    n_out = min(len(trace), budget_total)
    runs = trace.agreement_run.tolist()
    best = [0.0] * (n_out + 1)
    choice = [0] * (n_out + 1)
    for t in range(n_out - 1, -1, -1):
        top = min(runs[t], budget_total - t - 1, n_out - t - 1)
        if cap is not None:
            top = min(top, cap)
        first = t == 0
        best[t], choice[t] = min((cost.round_time(j, first) + best[t + j + 1], j) for j in range(max(top, 0) + 1))
    drafted, t = [], 0
    while t < n_out:
        drafted.append(choice[t])
        t += choice[t] + 1
    return OracleResult(drafted, cost.prefill(trace.meta.prompt_len, drafter_window=trace.meta.drafter_context)
                        + best[0], n_out)


def plain_decoding(trace: Trace, cost: CostModel, max_new_tokens: int | None = None) -> OracleResult:
    """The verifier alone (one token per call) under the same cost model: the speedup baseline."""
    budget_total = trace.meta.max_new_tokens if max_new_tokens is None else max_new_tokens
    n_out = min(len(trace), budget_total)
    rounds = [cost.round_time(0, first=i == 0) for i in range(n_out)]
    return OracleResult([0] * n_out, cost.prefill(trace.meta.prompt_len, with_drafter=False) + sum(rounds), n_out)


def predicted_speedups(traces: list[Trace], config: EntropyConfig, cost: CostModel) -> dict[str, float]:
    """Ratio-of-means figures of one rule over a set of traces: speedup vs plain decoding, share of the oracle."""
    tokens = sum(min(len(t), t.meta.max_new_tokens) for t in traces)
    rule = sum(replay(t, config, cost).time_s for t in traces)
    plain = sum(plain_decoding(t, cost).time_s for t in traces)
    oracle_cap = sum(true_oracle(t, cost, cap=config.max_draft_len).time_s for t in traces)
    oracle = sum(true_oracle(t, cost).time_s for t in traces)
    return {"tokens_per_s": tokens / rule, "speedup": plain / rule, "of_oracle_at_cap": oracle_cap / rule,
            "of_oracle": oracle / rule, "oracle_speedup": plain / oracle}
