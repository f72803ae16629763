"""Batch replay: the rounds `generate_batch` runs on B prompts, from their greedy traces, with no model call.

`replay_batch` groups the traces into batches of B in the order given (the runner's order: by prompt) and
replays each batch as `entspec.engine.batch.BatchDecoder` decodes it:

1. every row still generating takes its round's draft limit from `entspec.engine.round.draft_limit` (its own
   cap, budget and gate);
2. the rows whose limit allows drafting draft in lock step, one trace token per row and step
   (`entspec.replay.engine.TraceRound`); after each step every row decides with `round.stop_reason` on its own
   rule's state and leaves the lock step when it fires; with ``batch_stop="cost"`` the batch also stops every
   row once one more step no longer pays, by the engine's own decision (`entspec.engine.batch.lock_step_continues`)
   on the engine's acceptance estimates (the drafted token's probability from the trace, scaled by how well those
   probabilities predicted the row's recent verdicts);
3. one verifier call over every row, padded to the longest draft; each row accepts its leading right tokens and
   emits ``accepted + 1`` (fewer at its budget; its trace ends at its EOS);
4. each row's rule and gate hear its own verdict (`round.feedback`), and so do its acceptance estimates (the
   engine's ``heard``); rows that are done leave the batch; when the last one leaves, the next B traces form the
   next batch, as the runner batches prompts.

A round costs ``draft_feed(rows, catch-up) + (steps - 1) x draft(rows) + verify(rows, steps + 1)`` from a measured
`BatchCostModel`, ``rows`` being the rows still in the batch: the engine's drafter runs over all of them at every
lock-step step (a row that stopped rides along as a hole), its first step feeds each drafting row the committed
tokens its cache lacks (the longest of them: one or two after a drafting round, more after rounds that drafted
nothing, the whole prompt or window after a deferred prefill), and its verifier call is padded to the longest
draft. Every row is charged an
equal share of each round it is in, so a batch's shares add up to its time and `entspec tune` can sum them over
any set of prompts.

`batch_oracle` is the clairvoyant lock-step schedule under the same costs and batches: every row knows its
drafter's agreement run at its position (`Trace.agreement_run`, as the true oracle of one sequence does), drafts
the tokens that will be accepted up to the round's depth and then the first wrong one where the depth allows (free
in lock step; it keeps the row's drafter cache current), and each round takes the depth with the most tokens per
second, priced as a replayed round plus the change in the catch-up the drafter will owe. It is what a batch stop
that knew the verdicts would reach round by round, the reference for how much per-row stopping can still win; it
is not a proven minimum, since a round's depth moves the rows to different positions (the joint shortest path
over B rows is not searched).

What is an approximation: the costs are the measured table, while the engine's batch stop prices steps with that
table refined by its own rounds' timings (`BatchCostModel.observe`), so on a real run its stops can differ
where a step is close to paying; a catch-up is priced linearly between a step and the measured prefill; holes and
compactions of the caches cost nothing; the prefill is not modelled (the verifier's is the same for every method
at one batch size; a drafter's upfront prefill is left out with it, a deferred one is the catch-up above). Sampling traces are not replayed in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.batch import NO_DRAFTER, lock_step_continues, replay_row
from ..engine.batch_cost import BatchCostModel
from ..engine.config import EntropyConfig
from ..engine.entropy import ENTROPY_TYPES
from ..engine.round import draft_limit, feedback, stop_reason
from ..engine.sampling import SamplingParams
from ..rules import DraftState
from .engine import ReplayResult, TraceRound, check_replayable
from .trace import Trace, nats_to_unit

GREEDY = SamplingParams(0.0)  # what the batch stop is told after a step: greedy traces, greedy estimates


@dataclass(frozen=True)
class BatchRound:
    """One round of a replayed batch: the rows in it, its lock-step drafter steps, its modelled seconds."""

    rows: int
    steps: int
    seconds: float

    @property
    def width(self) -> int:
        """Positions per row of the round's verifier call: the pending token and the longest draft."""
        return self.steps + 1


@dataclass
class BatchReplay:
    """What `replay_batch` found: every row's rounds (in the order of the traces given; a round's ``round_s`` is the
    row's share of it, its ``steps`` the batch's lock-step steps) and every batch's rounds."""

    batch_size: int
    rows: list[ReplayResult]
    batches: list[list[BatchRound]]

    @property
    def time_s(self) -> float:
        return sum(r.seconds for rounds in self.batches for r in rounds)

    @property
    def new_tokens(self) -> int:
        return sum(row.new_tokens for row in self.rows)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.time_s if self.time_s > 0 else float("nan")


def replay_batch(traces: list[Trace], config: EntropyConfig, costs: BatchCostModel, batch_size: int,
                 max_new_tokens: int | None = None) -> BatchReplay:
    """The rounds ``config`` produces on ``traces`` decoded in batches of ``batch_size`` (module docstring), timed
    by ``costs``; ``max_new_tokens`` defaults to each trace's own budget."""
    for trace in traces:
        check_replayable(trace, config)
    return _replay(traces, config, costs, batch_size, max_new_tokens, drafts=True)


def plain_batch(traces: list[Trace], costs: BatchCostModel, batch_size: int,
                max_new_tokens: int | None = None) -> BatchReplay:
    """Batched plain decoding (the verifier alone: one token per row and round, as `generate_batch` without a
    drafter) under the same costs and batches: the baseline of a speedup at ``batch_size``."""
    return _replay(traces, EntropyConfig(), costs, batch_size, max_new_tokens, drafts=False)


def batch_oracle(traces: list[Trace], costs: BatchCostModel, batch_size: int, cap: int | None = None,
                 max_new_tokens: int | None = None) -> BatchReplay:
    """The clairvoyant lock-step schedule (module docstring) on ``traces`` in batches of ``batch_size``: row i at
    output position t may draft ``min(agreement_run[t], cap, tokens left - 1)`` tokens, all accepted; a round of
    depth w costs what `replay_batch` charges a round of w lock-step steps, and each round takes the depth with the
    most tokens per second (the shallowest among equals)."""
    _check_batch_size(batch_size)
    rows, batches = [], []
    for start in range(0, len(traces), batch_size):
        results, rounds = _oracle_one(traces[start:start + batch_size], costs, cap, max_new_tokens)
        rows += results
        batches.append(rounds)
    return BatchReplay(batch_size, rows, batches)


def _oracle_one(traces: list[Trace], costs: BatchCostModel, cap: int | None,
                max_new_tokens: int | None) -> tuple[list[ReplayResult], list[BatchRound]]:
    n_out = [min(len(t), t.meta.max_new_tokens if max_new_tokens is None else max_new_tokens) for t in traces]
    runs = [t.agreement_run.tolist() for t in traces]
    pos, lag = [0] * len(traces), [1] * len(traces)  # lag: committed tokens the drafter cache lacks (upfront prefill)
    out = [ReplayResult([], [], [], [], [], [], 0.0, []) for _ in traces]
    active, rounds = [i for i, n in enumerate(n_out) if n > 0], []
    while active:
        rows = len(active)
        room = {i: min(n_out[i] - pos[i] - 1, n_out[i] if cap is None else cap) for i in active}
        right = {i: min(runs[i][pos[i]], room[i]) for i in active}
        feeding = [i for i in active if room[i] > 0]  # a drafting round feeds these rows (a row out of room cannot)

        def drafts(i: int, depth: int) -> tuple[int, int]:
            """Row i's (drafted, accepted) in a round of ``depth`` steps: the tokens that will be accepted, and the
            first wrong one where the depth and its room allow (free in lock step; its cache then lacks only the
            verifier's token)."""
            accepted = min(right[i], depth)
            return (accepted + 1 if accepted < min(depth, room[i]) else accepted), accepted

        def lag_after(i: int, depth: int) -> int:
            drafted, accepted = drafts(i, depth)
            return accepted + 1 - min(accepted, drafted - 1) if drafted else lag[i] + accepted + 1

        def owed(lags: list[int]) -> float:
            """What the drafter's next feed costs beyond a step, with these lags."""
            return costs.draft_feed(rows, max(lags, default=1)) - costs.draft(rows)

        def seconds(depth: int) -> float:
            drafted = [drafts(i, depth)[0] for i in active] if costs.layout == "packed" else [depth] * rows
            return round_seconds(costs, drafted, max((lag[i] for i in feeding), default=1))

        def price(depth: int) -> float:
            """A round's seconds plus the change in the catch-up owed (a round that drafts nothing lets it grow)."""
            before = owed([lag[i] for i in feeding]) if depth else 0.0  # a drafting round pays it in its seconds
            return seconds(depth) + owed([lag_after(i, depth) for i in feeding]) - before

        deepest = max((min(right[i] + 1, room[i]) for i in feeding), default=0)  # a wrong token can pay by feeding
        depth = max(range(deepest + 1),
                    key=lambda w: (sum(min(right[i], w) + 1 for i in active) / price(w), -w))
        spent = seconds(depth)
        for i in active:
            (drafted, accepted), row = drafts(i, depth), out[i]
            row.drafted.append(drafted)
            row.accepted.append(accepted)
            row.emitted.append(accepted + 1)
            row.stop_reasons.append("oracle")
            row.entropies.append([])
            row.thresholds.append(None)
            row.steps.append(depth)
            row.round_s.append(spent / rows)
            lag[i] = lag_after(i, depth)
            pos[i] += accepted + 1
        rounds.append(BatchRound(rows, depth, spent))
        active = [i for i in active if pos[i] < n_out[i]]
    return out, rounds


def batch_relative(costs: BatchCostModel, batch_size: int) -> dict:
    """The batch costs at ``batch_size`` rows as the `EntropyConfig` cost fields the gate and the ``goodput`` rule
    read (`entspec.engine.round_cost`), in verifier calls of one position per row: a row's rule sees what a drafted
    position costs its batch (the counterpart of `CostModel.relative` for one sequence)."""
    v1 = costs.verify(batch_size, 1)
    return {"cost_ratio": round(costs.draft(batch_size) / v1, 4),
            "verify_slope": round(max(0.0, (costs.verify(batch_size, 17) - v1) / 16 / v1), 4),
            "verify_curve": [[w, max(round(costs.verify(batch_size, w) / v1, 4), 1e-4)] for w in costs.verify_widths],
            **({} if costs.layout == "padded" else {"batch_layout": costs.layout})}


def _replay(traces: list[Trace], config: EntropyConfig, costs: BatchCostModel, batch_size: int,
            max_new_tokens: int | None, drafts: bool) -> BatchReplay:
    _check_batch_size(batch_size)
    rows, batches = [], []
    for start in range(0, len(traces), batch_size):
        results, rounds = _replay_one(traces[start:start + batch_size], config, costs, max_new_tokens, drafts)
        rows += results
        batches.append(rounds)
    return BatchReplay(batch_size, rows, batches)


def round_seconds(costs: BatchCostModel, drafts: list[int], catch_up: int) -> float:
    """A batch round whose rows drafted ``drafts`` tokens in lock step, the first step feeding ``catch_up``
    committed tokens per row: the steps and one verifier call (`BatchCostModel.round_s`: padded to the longest
    draft, or packed), the first step's catch-up over the rows it carries (module docstring)."""
    seconds = costs.round_s(drafts)
    if max(drafts, default=0):
        seconds += costs.draft_feed(len(drafts), catch_up) - costs.draft(len(drafts))
    return seconds


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1 (got {batch_size!r})")


class _Lane:
    """One row of a replayed batch: the engine's row state (rule, gate, acceptance estimates, the round's draft and
    stop) and where the row stands on its trace."""

    def __init__(self, index: int, trace: Trace, config: EntropyConfig, budget: int) -> None:
        self.row = replay_row(index, config)
        self.col = trace.lists
        self.budget = budget
        self.n_out = min(len(self.col.output), budget)
        self.pos = 0
        prompt, window = trace.meta.prompt_len, config.drafter_context
        # committed tokens the drafter cache lacks: the pending token after an upfront prefill, else the window
        self.lag = min(prompt, window or prompt) if config.drafter_prefill == "deferred" else 1
        self.walk: TraceRound | None = None
        self.out = ReplayResult([], [], [], [], [], [], 0.0, [])

    def begin(self, config: EntropyConfig, drafts: bool, kind: int, scale: float) -> None:
        """A new round: its limit and a fresh draft, as `BatchDecoder._round` starts one."""
        row = self.row
        row.threshold = row.criterion.threshold
        row.left, row.lag = self.budget - self.pos, self.lag
        row.limit = draft_limit(config, row.gate, self.budget - self.pos, self.pos == 0) if drafts else NO_DRAFTER
        row.state, row.draft = DraftState(), []
        row.stop = row.limit.at_limit if row.limit.tokens == 0 else "none"
        self.walk = TraceRound(self.col, self.pos, kind, scale)

    def draft_one(self, config: EntropyConfig) -> bool:
        """One lock-step step for this row; True when its own stop fires."""
        row = self.row
        token = self.walk.draft(row.state)
        row.draft.append(token)
        stop = stop_reason(config, row.criterion, row.state, token in self.col.eos, row.limit)
        if stop is not None:
            row.stop = stop
        return stop is not None

    def end(self, share: float, steps: int) -> None:
        """The verdict: the row emits its accepted tokens and the verifier's; its rule, gate and estimates hear it."""
        row, accepted = self.row, self.walk.accepted
        emitted = min(accepted + 1, self.n_out - self.pos)
        feedback(row.criterion, row.gate, row.state, accepted)
        row.heard(len(row.draft), accepted, row.state.token_probs)
        out = self.out
        out.drafted.append(len(row.draft))
        out.accepted.append(accepted)
        out.emitted.append(emitted)
        out.stop_reasons.append(row.stop)
        out.entropies.append(row.state.entropies)
        out.thresholds.append(row.threshold)
        out.steps.append(steps)
        out.round_s.append(share)
        self.pos += emitted
        drafted = len(row.draft)  # the drafter cache keeps the accepted draft it was fed (never the last token)
        self.lag = emitted - min(accepted, drafted - 1) if drafted else self.lag + emitted


def _replay_one(traces: list[Trace], config: EntropyConfig, costs: BatchCostModel, max_new_tokens: int | None,
                drafts: bool) -> tuple[list[ReplayResult], list[BatchRound]]:
    """One batch, round by round, until its last row is done."""
    kind, scale = ENTROPY_TYPES.index(config.entropy_type), nats_to_unit(config.entropy_unit)
    lanes = [_Lane(i, t, config, t.meta.max_new_tokens if max_new_tokens is None else max_new_tokens)
             for i, t in enumerate(traces)]
    stop_costs = costs if config.batch_stop == "cost" else None
    active = [lane for lane in lanes if lane.n_out > 0]
    rounds = []
    while active:
        for lane in active:
            lane.begin(config, drafts, kind, scale)
        _draft(active, config, stop_costs)
        steps = max(len(lane.row.draft) for lane in active)
        catch_up = max((lane.lag for lane in active if lane.row.draft), default=1)
        seconds = round_seconds(costs, [len(lane.row.draft) for lane in active], catch_up)
        for lane in active:
            lane.end(seconds / len(active), steps)
        rounds.append(BatchRound(len(active), steps, seconds))
        active = [lane for lane in active if lane.pos < lane.n_out]
    return [lane.out for lane in lanes], rounds


def _draft(lanes: list[_Lane], config: EntropyConfig, costs: BatchCostModel | None) -> None:
    """Lock-step drafting as `BatchDecoder._draft` runs it: every drafting row one token a step until its own stop,
    and with ``costs`` (``batch_stop="cost"``) the batch's stop before the first step and after every step."""
    rows = [lane.row for lane in lanes]
    drafting = [row.limit.tokens > 0 for row in rows]
    if not any(drafting):
        return
    for row in rows:
        row.expected, row.survival = 0.0, 1.0
    steps = 0
    if costs is not None and not lock_step_continues(costs, rows, drafting, steps, None):
        return
    while True:
        for i, lane in enumerate(lanes):
            if drafting[i] and lane.draft_one(config):
                drafting[i] = False
        if not any(drafting):
            return
        steps += 1
        if costs is not None and not lock_step_continues(costs, rows, drafting, steps, GREEDY):
            return
