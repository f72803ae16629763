"""`EntropyBasedDrafter`: proposes tokens with its own KV cache until its stopping rule says stop.

The protocol the decode loop uses is two methods, like transformers' ``CandidateGenerator``: `propose` (the
round's draft after the committed tokens) and `update` (the verifier's verdict: the cache keeps the accepted
prefix, the rule and the gate learn from it); `start` begins a generation on a prompt.

The draft loop is the hot path. Per drafted token it reads from the device at most once: one small tensor with
the token, its draft probability and the statistics the rule declares (`RuleInfo.reads`, computed by the
`STATISTICS` table); a rule that reads nothing (fixed, heuristic) reads nothing. What the records need beyond
that (the tokens and statistics the rule did not read, every entropy type for the trace) is computed after the
loop in one batched pass over the round's distributions and left on the device (`Draft.unread`): the decode loop
reads it together with the verifier's verdict, so a round costs the loop's reads plus one (`Draft.settle` fills
the record, checks NaN once and cuts a draft whose tokens were not read after its first EOS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import PreTrainedModel

from .caches import cached_model
from .config import EntropyConfig
from .entropy import ENTROPY_TYPES, EntropyComputer, shannon_entropy
from .gate import SpeculationGate
from .round import DraftLimit, draft_limit, feedback, stop_reason
from .sampling import SamplingParams, sample
from .timing import Stopwatch
from ..rules import RULES, DraftState, build_criterion

# A statistic of the drafted tokens, from the processed logits [n, V], the draft distributions q [n, V] and the
# tokens [n]: the values a rule may declare it reads (`DraftState`'s fields).
Statistic = Callable[["EntropyBasedDrafter", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
STATISTICS: dict[str, Statistic] = {
    "token_probs": lambda d, processed, q, tokens: q.gather(-1, tokens.view(-1, 1)).view(-1),
    "entropies": lambda d, processed, q, tokens: d.entropy(processed, check=False),
    "shannon_nats": lambda d, processed, q, tokens: shannon_entropy(processed, check=False),
}
RECORDED = ("token_probs", "entropies")  # what every round's record holds, read or not


@dataclass
class Draft:
    """One round's proposal: n tokens and the distributions they were drawn from."""

    tokens: torch.Tensor  # [n] drafted token ids
    probs: torch.Tensor  # [n, V] q_1..q_n: the processed draft distributions (float32)
    state: DraftState  # per-token entropies and draft probabilities
    stop_reason: str  # "criterion", "max_draft_len", "max_new_tokens", "eos", "probe" (the gate's
    # one-token probe), "gate" (the gate skipped drafting this round) or "none" (nothing drafted)
    token_ids: list[int] = field(default_factory=list)  # the tokens as Python ints
    committed: int = 0  # the committed sequence's length when the round was proposed
    threshold: float | None = None  # the rule's threshold this round (rules that have one)
    seconds: float = 0.0
    entropies_by_type: dict[str, list[float]] = field(default_factory=dict)
    host_reads: dict[str, int] = field(default_factory=dict)  # device -> host reads of the draft loop: "loop"
    unread: dict[str, torch.Tensor] = field(default_factory=dict)  # [n] each: "tokens", "token_probs",
    # "entropies" (the configured type) and the other entropy types, not read yet (`settle` takes them)
    entropy_type: str = "shannon"  # the configured type, the one `state.entropies` holds
    cut_at: frozenset[int] = frozenset()  # EOS ids a draft whose tokens were not read is cut after, in `settle`
    source: str = ""  # the drafter model's class (names it in the NaN error)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def settle(self, values: list[float]) -> None:
        """``values``: the `unread` tensors, read (in their order, n values each). Fills the record, raises on NaN
        logits (they make a whole row of q NaN, so its token's probability shows it: one check per round) and
        cuts a draft whose tokens were not read after its first EOS (no random draw was spent past it; the
        verifier's verdict on the tokens after it is dropped with them)."""
        n, by_type = len(self), {}
        for i, name in enumerate(self.unread):
            part = values[i * n:(i + 1) * n]
            if name == "tokens":
                self.token_ids[:] = [int(t) for t in part]
            elif name in RECORDED:
                getattr(self.state, name)[:] = part
            else:
                by_type[name] = part
        self.unread = {}
        if any(math.isnan(p) for p in self.state.token_probs):
            raise ValueError(f"{self.source} produced NaN logits (check the dtype and the weights)")
        if by_type:
            self.entropies_by_type = {name: list(self.state.entropies) if name == self.entropy_type else by_type[name]
                                      for name in ENTROPY_TYPES}
        cut = next((i + 1 for i, t in enumerate(self.token_ids) if t in self.cut_at), None)
        if cut is not None:
            _truncate(self, cut)


class EntropyBasedDrafter:
    """The small model's side of speculative decoding (cf. transformers' ``CandidateGenerator``).

    `propose` extends the committed sequence token by token and stops when the stopping rule fires (after at
    least `min_draft_len` tokens), at `max_draft_len`, at EOS, at the token budget or at the speculation gate's
    limit (`entspec.engine.round`). `update` takes the verifier's verdict.

    ``kv_cache`` and ``compile`` choose the drafter's KV cache (see `entspec.engine.caches.cached_model`).

    With ``config.drafter_context = N`` the drafter reads a window of the committed sequence: the prompt's last N
    tokens at the prefill, growing with each round, and rebuilt on the last N tokens (one drafter prefill, inside
    the round's drafting time) when it reaches 2N. The window starts at position 0 whatever its offset in the
    sequence, like a prompt of its own: a model meets its first positions as the start of a text (attention sinks),
    so a window re-encoded from 0 reads better than a cache whose oldest entries were dropped. A drafter only
    proposes; the verifier reads the whole sequence, so the output is the verifier's whatever N is.
    """

    def __init__(self, model: PreTrainedModel, config: EntropyConfig, kv_cache: str = "dynamic",
                 compile: bool | str = False) -> None:
        self.lm = cached_model(model, kv_cache=kv_cache, compile=compile, check_nan=False)  # NaN: once per round
        self.config = config
        self.entropy = EntropyComputer(config.entropy_type, config.renyi_alpha, config.entropy_topk,
                                       config.entropy_unit)
        self.criterion = build_criterion(config)
        self.gate = SpeculationGate(config)
        # read per token: the token's probability (the NaN sentinel) and what the rule declares
        self.reads = ("token_probs", *sorted(RULES[config.strategy].reads - {"token_probs"}))
        self.reads_nothing = not RULES[config.strategy].reads
        self.window = config.drafter_context
        self.window_start = 0  # where the cached window starts in the committed sequence
        self.max_length: int | None = None
        self.first_round = True  # no verdict heard yet in this generation
        self.filled = False  # the committed sequence is cached (after the prefill)

    def start(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        """A new generation on ``prompt [1, T]``: fresh rule and gate, the prompt cached (with a context window,
        its last ``drafter_context`` tokens; with ``drafter_prefill="deferred"`` later, when the second round
        drafts, over the committed sequence then). ``max_length``: the most positions the cache will hold (sizes a
        static cache; a dynamic one ignores it)."""
        self.criterion.reset()
        self.gate.reset()
        self.max_length, self.first_round, self.filled = max_length, True, False
        if self.config.drafter_prefill == "upfront":
            self._prefill(prompt)

    def _prefill(self, sequence: torch.Tensor) -> None:
        self.window_start = max(0, sequence.shape[1] - self.window) if self.window else 0
        self.lm.prefill(sequence[:, self.window_start:], self.max_length)
        self.filled = True

    def warm_up(self, max_length: int) -> None:
        """Compile the draft step's graphs ahead of timing (a no-op on an eager cache)."""
        # One token per step, two after a fully accepted round; with the gate, catch-ups of any length.
        self.lm.warm_up(max_length, None if self.config.gate else 2)

    def propose(self, sequence: torch.Tensor, budget: int, sampling: SamplingParams,
                generator: torch.Generator | None, eos_token_ids: set[int]) -> Draft:
        """The round's draft after the committed ``sequence [1, L]`` with ``budget`` tokens left to emit: at most
        ``budget - 1`` tokens (the verifier always adds one of its own), none while the gate finds that
        speculation does not pay (the verifier then decodes one token, as plain decoding does)."""
        limit = draft_limit(self.config, self.gate, budget, self.first_round)
        threshold = self.criterion.threshold
        if limit.at_limit in ("gate", "deferred"):
            return empty_draft(sequence, self.lm.model.config.vocab_size, limit.at_limit, threshold)
        with Stopwatch(self.lm.device) as sw:
            draft = self._draft(sequence, limit, sampling, generator, eos_token_ids)
        draft.committed, draft.threshold, draft.seconds = sequence.shape[1], threshold, sw.seconds
        return draft

    def update(self, draft: Draft, accepted: int) -> None:
        """The verifier accepted the first ``accepted`` tokens of ``draft``: the cache keeps them (no
        recomputation), the rule and the gate hear the verdict (zero-draft rounds too)."""
        if self.filled:
            self.lm.crop(min(len(self.lm), draft.committed + accepted - self.window_start))
        self.first_round = False
        feedback(self.criterion, self.gate, draft.state, accepted)

    def _draft(self, sequence: torch.Tensor, limit: DraftLimit, sampling: SamplingParams,
               generator: torch.Generator | None, eos_token_ids: set[int]) -> Draft:
        """Draft up to ``limit.tokens`` tokens after ``sequence``; the stop decisions are `round.stop_reason`'s."""
        state, reads = DraftState(), {"loop": 0}
        # Read per token when the rule reads something, or to see an EOS as it is sampled (a greedy draft is cut
        # at its first EOS after the loop instead: no random draw is spent past it).
        per_token = not self.reads_nothing or (bool(eos_token_ids) and not sampling.greedy)
        tokens, processed_rows, probs, token_ids = [], [], [], []
        chunk = self.config.draft_chunk if per_token else 1  # tokens drafted between two reads
        reason = "none" if limit.tokens >= 1 else limit.at_limit
        if not self.filled:  # drafter_prefill="deferred": the prefill runs in the first round that drafts
            self._prefill(sequence)
        elif self.window and len(self.lm) >= 2 * self.window:  # rebuild the window on the last N tokens
            self.window_start = sequence.shape[1] - self.window
            self.lm.prefill(sequence[:, self.window_start:])
        inputs = sequence[:, self.window_start + len(self.lm):]  # not yet cached: 0 after the prefill, 1, 2, ...
        unread: list[torch.Tensor] = []  # the statistics of the chunk's tokens, read together
        while len(tokens) < limit.tokens:
            # 1. One drafter step: next-token logits, processed distribution q, the drafted token x ~ q.
            logits = self.lm.extend(inputs, 1)  # [1, V]
            processed = sampling.process(logits)  # temperature / top-k / top-p, -inf where masked
            q = torch.softmax(processed, dim=-1)
            token = logits.argmax(-1) if sampling.greedy else sample(q, generator)  # [1]
            tokens.append(token)
            processed_rows.append(processed)
            probs.append(q)
            inputs = token.view(1, 1)
            if per_token:  # 2. what the rule reads: [x, q(x), declared statistics], read once per chunk
                unread.append(torch.cat([token.to(q.dtype), *(STATISTICS[n](self, processed, q, token)
                                                              for n in self.reads)]))
                if len(unread) < chunk and len(tokens) < limit.tokens:
                    continue
                rows, unread = torch.stack(unread).tolist(), []
                reads["loop"] += 1
            else:  # a rule that reads nothing sees the draft length only; the values are filled in after the loop
                rows = [None]
            # 3. Token by token: stop at EOS, when the rule says so (after min_draft_len), or at the limit.
            first = len(tokens) - len(rows)
            for i, values in enumerate(rows, start=first):
                for name in DraftState.__dataclass_fields__:
                    getattr(state, name).append(values[1 + self.reads.index(name)] if values and name in self.reads
                                                else math.nan)
                if values:
                    token_ids.append(int(values[0]))
                stop = stop_reason(self.config, self.criterion, state, bool(values) and token_ids[-1] in eos_token_ids,
                                   limit)
                if stop is not None:
                    reason = stop
                    del tokens[i + 1:], processed_rows[i + 1:], probs[i + 1:]  # the chunk's steps past the stop
                    break
            if reason != "none":
                break
        draft = Draft(torch.cat(tokens) if tokens else sequence.new_zeros(0),
                      torch.cat(probs) if probs else torch.zeros(0, self.lm.model.config.vocab_size,
                                                                 device=sequence.device),
                      state, reason, token_ids, host_reads=reads, entropy_type=self.config.entropy_type,
                      cut_at=frozenset() if per_token else frozenset(eos_token_ids),
                      source=type(self.lm.model).__name__)
        if tokens:
            draft.unread = self._statistics(draft, torch.cat(processed_rows), per_token)
        return draft

    def _statistics(self, draft: Draft, processed: torch.Tensor, per_token: bool) -> dict[str, torch.Tensor]:
        """Once per round, batched over the ``n`` drafted tokens, on the device: what the loop did not read (the
        tokens, the recorded statistics, every entropy type when `record_all_entropies` is set)."""
        cfg = self.config
        read = set(self.reads) if per_token else set()
        rows = {} if per_token else {"tokens": draft.tokens}
        for name in RECORDED:
            if name not in read:
                rows[name] = STATISTICS[name](self, processed, draft.probs, draft.tokens)
        for name in [t for t in ENTROPY_TYPES if t != cfg.entropy_type] if cfg.record_all_entropies else []:
            rows[name] = self.entropy.compute(processed, name, check=False)
        return rows


class NullDrafter:
    """The drafter of autoregressive decoding: it drafts nothing and costs nothing (no model, no cache, no read).

    It has `EntropyBasedDrafter`'s protocol, so the decode loop has one path: with it every round verifies the
    pending token alone (n = 0) and emits the verifier's own next token.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def start(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        pass

    def warm_up(self, max_length: int) -> None:
        pass

    def propose(self, sequence: torch.Tensor, budget: int, sampling: SamplingParams,
                generator: torch.Generator | None, eos_token_ids: set[int]) -> Draft:
        return empty_draft(sequence, self.vocab_size)

    def update(self, draft: Draft, accepted: int) -> None:
        pass


def empty_draft(sequence: torch.Tensor, vocab: int, stop_reason: str = "none",
                threshold: float | None = None) -> Draft:
    """A round without draft tokens (``stop_reason`` "none", "gate" when the gate skipped drafting, or "deferred"
    in the first round of a deferred drafter prefill)."""
    return Draft(sequence.new_zeros(0), torch.zeros(0, vocab, device=sequence.device), DraftState(), stop_reason,
                 committed=sequence.shape[1], threshold=threshold, host_reads={"loop": 0})


def _truncate(draft: Draft, n: int) -> None:
    """Keep the first ``n`` drafted tokens (a greedy draft cut after its first EOS)."""
    draft.stop_reason = "eos"
    draft.tokens, draft.probs, draft.token_ids = draft.tokens[:n], draft.probs[:n], draft.token_ids[:n]
    for values in (*(getattr(draft.state, f) for f in DraftState.__dataclass_fields__),
                   *draft.entropies_by_type.values()):
        del values[n:]
