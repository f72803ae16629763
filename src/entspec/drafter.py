"""`EntropyBasedDrafter`: proposes tokens with its own KV cache until its stopping rule says stop."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .config import EntropyConfig
from .entropy import ENTROPY_TYPES, EntropyComputer, shannon_entropy
from .kv import CachedModel, Stopwatch
from .sampling import SamplingParams, sample
from .stopping import DraftState, RoundFeedback, build_criterion


@dataclass
class Draft:
    """One round's proposal: n tokens and the distributions they were drawn from."""

    tokens: torch.Tensor  # [n] drafted token ids
    probs: torch.Tensor  # [n, V] q_1..q_n: the processed draft distributions (float32)
    state: DraftState  # per-token entropies and draft probabilities
    stop_reason: str  # "criterion", "max_draft_len", "max_new_tokens", "eos" or "none" (nothing drafted)
    seconds: float = 0.0
    entropies_by_type: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class EntropyBasedDrafter:
    """The small model's side of speculative decoding (cf. transformers' ``CandidateGenerator``).

    `draft` extends the committed sequence token by token and stops when the stopping rule fires (after at
    least `min_draft_len` tokens), at `max_draft_len`, at EOS, or at the token budget. `rollback` drops
    rejected positions from the cache; `update` passes the verifier's verdict to adaptive rules.
    """

    def __init__(self, model: PreTrainedModel, config: EntropyConfig) -> None:
        self.lm = CachedModel(model)
        self.config = config
        self.entropy = EntropyComputer(config.entropy_type, config.renyi_alpha, config.entropy_topk,
                                       config.entropy_unit)
        self.criterion = build_criterion(config)

    def start(self) -> None:
        """New generation: fresh rule state (the cache is reset by `prefill`)."""
        self.criterion.reset()

    def prefill(self, prompt: torch.Tensor) -> None:
        """Cache ``prompt [1, T]``; its last logits give the first draft token."""
        self.lm.prefill(prompt)

    def draft(
        self,
        sequence: torch.Tensor,
        max_tokens: int,
        sampling: SamplingParams,
        generator: torch.Generator | None,
        eos_token_ids: set[int],
    ) -> Draft:
        """Draft up to ``max_tokens`` tokens continuing ``sequence [1, L]`` (the committed tokens)."""
        cfg, state = self.config, DraftState()
        tokens, probs, by_type = [], [], {}
        stop_reason = "none"
        inputs = sequence[:, len(self.lm):]  # tokens not yet in the cache (0 after prefill, 1, or 2)
        with Stopwatch(self.lm.device) as sw:
            while len(tokens) < max_tokens:
                logits = self.lm.extend(inputs, 1)  # [1, V]: the next-token logits
                processed = sampling.process(logits)  # temperature / top-k / top-p, -inf where masked
                q = torch.softmax(processed, dim=-1)
                token = logits.argmax(-1) if sampling.greedy else sample(q, generator)  # [1]
                tokens.append(token)
                probs.append(q)
                state.token_probs.append(float(q[0, token]))
                entropies = self._entropies(processed)
                state.entropies.append(entropies[cfg.entropy_type])
                state.shannon_nats.append(entropies["shannon_nats"])
                if cfg.record_all_entropies:
                    for name in ENTROPY_TYPES:
                        by_type.setdefault(name, []).append(entropies[name])
                inputs = token.view(1, 1)

                if int(token) in eos_token_ids:
                    stop_reason = "eos"
                elif len(tokens) >= cfg.min_draft_len and self.criterion.should_stop(state):
                    stop_reason = "criterion"
                elif len(tokens) >= max_tokens:
                    stop_reason = "max_draft_len" if max_tokens == cfg.max_draft_len else "max_new_tokens"
                else:
                    continue
                break
            if max_tokens < 1:
                stop_reason = "max_new_tokens"
        if tokens:
            token_tensor, prob_tensor = torch.cat(tokens), torch.cat(probs)
        else:
            vocab = self.lm.model.config.vocab_size
            token_tensor = sequence.new_zeros(0)
            prob_tensor = torch.zeros(0, vocab, device=sequence.device)
        return Draft(token_tensor, prob_tensor, state, stop_reason, sw.seconds, by_type)

    def _entropies(self, processed: torch.Tensor) -> dict[str, float]:
        """The configured entropy (and, for the trace, every type) plus Shannon in nats for SVIP / AdaEDL."""
        if self.config.record_all_entropies:
            values = {name: float(h) for name, h in self.entropy.all_types(processed).items()}
        else:
            values = {self.config.entropy_type: float(self.entropy(processed))}
        shannon = values.get("shannon")
        if shannon is None or self.entropy.unit != "nats":
            shannon = float(shannon_entropy(processed))
        return {**values, "shannon_nats": shannon}

    def rollback(self, length: int) -> None:
        """Keep at most the first ``length`` cached positions (the accepted prefix)."""
        self.lm.crop(min(len(self.lm), length))

    def update(self, draft: Draft, accepted: int) -> None:
        self.criterion.update(RoundFeedback(len(draft), accepted, list(draft.state.entropies)))
