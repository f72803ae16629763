"""`EntropyBasedDrafter`: proposes tokens with its own KV cache until its stopping rule says stop.

The draft loop is the hot path: per drafted token it reads from the device at most once (one small tensor
holding the token id, its draft probability and the entropies the rule reads, `RULES[strategy].reads`), and
not at all for rules that read nothing (fixed, heuristic). Everything else the trace records (the other
entropy types, the statistics a rule did not read) is computed once per round, batched over the kept draft
distributions, and read back together with a NaN check in one more read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .config import EntropyConfig
from .entropy import ENTROPY_TYPES, EntropyComputer, shannon_entropy
from .caches import cached_model
from .kv import CachedModel
from .timing import Stopwatch
from .sampling import SamplingParams, sample
from .gate import SpeculationGate
from .round import DraftLimit, draft_limit, stop_reason
from ..rules import RULES, DraftState, RoundFeedback, build_criterion

_ALL_READS = frozenset(DraftState.__dataclass_fields__)


@dataclass
class Draft:
    """One round's proposal: n tokens and the distributions they were drawn from."""

    tokens: torch.Tensor  # [n] drafted token ids
    probs: torch.Tensor  # [n, V] q_1..q_n: the processed draft distributions (float32)
    state: DraftState  # per-token entropies and draft probabilities
    stop_reason: str  # "criterion", "max_draft_len", "max_new_tokens", "eos", "probe" (the gate's
    # one-token probe), "gate" (the gate skipped drafting this round) or "none" (nothing drafted)
    seconds: float = 0.0
    entropies_by_type: dict[str, list[float]] = field(default_factory=dict)
    token_ids: list[int] | None = None  # the tokens as Python ints, when the drafter has read them

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class EntropyBasedDrafter:
    """The small model's side of speculative decoding (cf. transformers' ``CandidateGenerator``).

    `draft` extends the committed sequence token by token and stops when the stopping rule fires (after at
    least `min_draft_len` tokens), at `max_draft_len`, at EOS, or at the token budget. `rollback` drops
    rejected positions from the cache; `update` passes the verifier's verdict to adaptive rules. `propose` is
    what the decode loop calls: the round's draft within the token budget and the gate's limit.

    ``kv_cache`` and ``compile`` choose the drafter's KV cache (see `entspec.engine.caches.cached_model`).

    With ``config.drafter_context = N`` the drafter reads a window of the committed sequence: the prompt's last N
    tokens at the prefill, growing with each round, and rebuilt on the last N tokens (one drafter prefill, inside
    the round's drafting time) when it reaches 2N. The window starts at position 0 whatever its offset in the
    sequence, like a prompt of its own: a model meets its first positions as the start of a text (attention sinks),
    so a window re-encoded from 0 reads better than a cache whose oldest entries were dropped. A drafter only
    proposes; the verifier reads the whole sequence, so the output is the verifier's whatever N is.
    """

    method = "speculative"  # the decoding method a decode loop with this drafter runs

    def __init__(self, model: PreTrainedModel, config: EntropyConfig, kv_cache: str = "dynamic",
                 compile: bool | str = False) -> None:
        # NaN is checked once per round, in `draft`
        self.lm = cached_model(model, kv_cache=kv_cache, compile=compile, check_nan=False)
        self.config = config
        self.entropy = EntropyComputer(config.entropy_type, config.renyi_alpha, config.entropy_topk,
                                       config.entropy_unit)
        self.criterion = build_criterion(config)
        self.gate = SpeculationGate(config)
        info = RULES.get(config.strategy)
        self.reads = _ALL_READS if info is None else info.reads  # the DraftState fields the rule reads
        # Shannon in nats is the configured entropy itself when that is Shannon in nats (SVIP, AdaEDL).
        self._shannon_is_configured = config.entropy_type == "shannon" and config.entropy_unit == "nats"
        self.window = config.drafter_context
        self.window_start = 0  # where the cached window starts in the committed sequence

    def start(self) -> None:
        """New generation: fresh rule state (the cache is reset by `prefill`)."""
        self.criterion.reset()
        self.gate.reset()

    def prefill(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        """Cache ``prompt [1, T]``; its last logits give the first draft token. ``max_length``: the most
        positions the cache will hold in this generation (sizes a static cache; a dynamic one ignores it).
        With a context window, only the prompt's last ``drafter_context`` tokens."""
        self.window_start = max(0, prompt.shape[1] - self.window) if self.window else 0
        self.lm.prefill(prompt[:, self.window_start:], max_length)

    def warm_up(self, max_length: int) -> None:
        """Compile the draft step's graphs ahead of timing (a no-op on an eager cache)."""
        # One token per step, two after a fully accepted round; with the gate, catch-ups of any length.
        self.lm.warm_up(max_length, None if self.config.gate else 2)

    @property
    def threshold(self) -> float | None:
        """The stopping rule's threshold as it stands for the next round (None for rules without one)."""
        return self.criterion.threshold

    def propose(self, sequence: torch.Tensor, budget: int, sampling: SamplingParams,
                generator: torch.Generator | None, eos_token_ids: set[int]) -> Draft:
        """The round's draft after the committed ``sequence [1, L]`` with ``budget`` tokens left to emit.

        At most ``budget - 1`` tokens, since the verifier always adds one of its own; none while the gate finds
        that speculation does not pay (the verifier then decodes one token, as plain decoding)."""
        limit = draft_limit(self.config, self.gate, budget)
        if limit.at_limit == "gate":
            return empty_draft(sequence, self.lm.model.config.vocab_size, "gate")
        return self.draft(sequence, limit, sampling, generator, eos_token_ids)

    def draft(
        self,
        sequence: torch.Tensor,
        limit: DraftLimit,
        sampling: SamplingParams,
        generator: torch.Generator | None,
        eos_token_ids: set[int],
    ) -> Draft:
        """Draft up to ``limit.tokens`` tokens continuing ``sequence [1, L]`` (the committed tokens); the stop
        decisions are `entspec.engine.round.stop_reason`'s."""
        cfg, state = self.config, DraftState()
        need_entropy = "entropies" in self.reads
        need_shannon = "shannon_nats" in self.reads and not (need_entropy and self._shannon_is_configured)
        # Read back per token when the rule reads something, or to see an EOS as it is sampled (a greedy draft
        # can instead be cut at its first EOS after the loop: no random draw is spent past it).
        read_each = bool(self.reads) or (bool(eos_token_ids) and not sampling.greedy)
        tokens, processed_rows, probs = [], [], []
        token_ids: list[int] = []
        reason = "none" if limit.tokens >= 1 else limit.at_limit
        with Stopwatch(self.lm.device) as sw:
            if self.window and len(self.lm) >= 2 * self.window:  # rebuild the window on the last N tokens
                self.window_start = sequence.shape[1] - self.window
                self.lm.prefill(sequence[:, self.window_start:])
            # tokens not yet in the cache (0 after prefill, 1, 2; more after gated rounds)
            inputs = sequence[:, self.window_start + len(self.lm):]
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

                # 2. What the rule reads, in one device -> host read: [x, q(x), H_configured?, H_shannon_nats?].
                if read_each:
                    stats = [token.to(q.dtype), q.gather(-1, token.view(1, 1)).view(1)]
                    if need_entropy:
                        stats.append(self.entropy(processed, check=False))  # NaN shows in q(x) just below
                    if need_shannon:
                        stats.append(shannon_entropy(processed, check=False))
                    values = torch.cat(stats).tolist()
                    token_ids.append(int(values[0]))
                    state.token_probs.append(values[1])
                    h = values[2] if need_entropy else math.nan
                    state.entropies.append(h)
                    state.shannon_nats.append(values[-1] if need_shannon else
                                              h if self._shannon_is_configured else math.nan)
                    if math.isnan(values[1]):  # NaN logits make the whole row of q NaN
                        _raise_nan(self.lm)
                else:  # a rule that reads nothing sees the draft length only; the values are filled in below
                    state.token_probs.append(math.nan)
                    state.entropies.append(math.nan)
                    state.shannon_nats.append(math.nan)

                # 3. Stop at EOS, when the rule says so (after min_draft_len), or at the limit.
                stop = stop_reason(cfg, self.criterion, state, read_each and token_ids[-1] in eos_token_ids,
                                   limit)
                if stop is not None:
                    reason = stop
                    break
            # 4. Once per round: the trace's statistics and the NaN check in one read; a greedy draft that did
            #    not read its tokens is cut after its first EOS (no random draw was spent past it).
            by_type = self._finish_round(state, tokens, processed_rows, probs, token_ids, read_each)
            if not read_each and eos_token_ids:
                cut = next((i + 1 for i, t in enumerate(token_ids) if t in eos_token_ids), None)
                if cut is not None:
                    reason = "eos"
                    del tokens[cut:], probs[cut:], token_ids[cut:]
                    for values in (state.entropies, state.token_probs, state.shannon_nats, *by_type.values()):
                        del values[cut:]
        if tokens:
            token_tensor, prob_tensor = torch.cat(tokens), torch.cat(probs)
        else:
            vocab = self.lm.model.config.vocab_size
            token_tensor = sequence.new_zeros(0)
            prob_tensor = torch.zeros(0, vocab, device=sequence.device)
        return Draft(token_tensor, prob_tensor, state, reason, sw.seconds, by_type,
                     token_ids if len(token_ids) == len(tokens) else None)

    def _finish_round(self, state: DraftState, tokens: list[torch.Tensor], processed_rows: list[torch.Tensor],
                      probs: list[torch.Tensor], token_ids: list[int], read_each: bool) -> dict[str, list[float]]:
        """Fill what the loop did not read, batched over the round's ``n`` drafted tokens; one read in all.

        Returns every entropy type per drafted token when `record_all_entropies` is set (else ``{}``). The
        configured type is the list the rule saw, so trace and decisions agree exactly.
        """
        n = len(tokens)
        if n == 0:
            return {}
        cfg = self.config
        processed = torch.cat(processed_rows)  # [n, V]
        token_tensor = torch.cat(tokens)  # [n]
        rows: dict[str, torch.Tensor] = {}  # name -> [n], read together below
        if not read_each:
            rows["tokens"] = token_tensor.to(processed.dtype)
            rows["token_probs"] = torch.cat(probs).gather(-1, token_tensor.view(n, 1)).view(n)
        if not (read_each and "entropies" in self.reads):
            rows["entropies"] = self.entropy(processed, check=False)
        shannon_read = read_each and "shannon_nats" in self.reads
        if not shannon_read and not self._shannon_is_configured:
            rows["shannon_nats"] = shannon_entropy(processed, check=False)
        other_types = [t for t in ENTROPY_TYPES if t != cfg.entropy_type] if cfg.record_all_entropies else []
        for name in other_types:
            rows[name] = self.entropy.compute(processed, name, check=False)
        if not rows:
            return {cfg.entropy_type: list(state.entropies)} if cfg.record_all_entropies else {}
        values = dict(zip(rows, torch.stack(list(rows.values())).tolist()))
        if "tokens" in values:
            token_ids[:] = [int(t) for t in values["tokens"]]
            state.token_probs[:] = values["token_probs"]
            if any(math.isnan(p) for p in state.token_probs):  # NaN logits make the whole row of q NaN
                _raise_nan(self.lm)
        if "entropies" in values:
            state.entropies[:] = values["entropies"]
        if "shannon_nats" in values:
            state.shannon_nats[:] = values["shannon_nats"]
        elif self._shannon_is_configured:
            state.shannon_nats[:] = state.entropies
        if not cfg.record_all_entropies:
            return {}
        return {name: list(state.entropies) if name == cfg.entropy_type else values[name] for name in ENTROPY_TYPES}

    def rollback(self, length: int) -> None:
        """Keep at most the first ``length`` committed tokens (the accepted prefix) in the cache."""
        self.lm.crop(min(len(self.lm), length - self.window_start))

    def update(self, draft: Draft, accepted: int) -> None:
        """The verifier's verdict on the last round, for the rule and the gate (zero-draft rounds too)."""
        self.criterion.update(RoundFeedback(len(draft), accepted, list(draft.state.entropies),
                                            list(draft.state.token_probs)))
        self.gate.update(len(draft), accepted)


class NullDrafter:
    """The drafter of autoregressive decoding: it drafts nothing and costs nothing (no model, no cache, no read).

    It has `EntropyBasedDrafter`'s interface, so the decode loop has one path: with it every round verifies the
    pending token alone (n = 0) and emits the verifier's own next token.
    """

    method = "autoregressive"
    threshold = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def start(self) -> None:
        pass

    def prefill(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        pass

    def warm_up(self, max_length: int) -> None:
        pass

    def propose(self, sequence: torch.Tensor, budget: int, sampling: SamplingParams,
                generator: torch.Generator | None, eos_token_ids: set[int]) -> Draft:
        return empty_draft(sequence, self.vocab_size)

    def rollback(self, length: int) -> None:
        pass

    def update(self, draft: Draft, accepted: int) -> None:
        pass


def empty_draft(sequence: torch.Tensor, vocab: int, stop_reason: str = "none") -> Draft:
    """A round without draft tokens (``stop_reason`` "none", or "gate" when the gate skipped drafting)."""
    return Draft(sequence.new_zeros(0), torch.zeros(0, vocab, device=sequence.device), DraftState(), stop_reason,
                 token_ids=[])


def _raise_nan(lm: CachedModel) -> None:
    raise ValueError(f"{type(lm.model).__name__} produced NaN logits (check the dtype and the weights)")
