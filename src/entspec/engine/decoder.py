"""`EntropyBasedSpeculativeDecoder`: draft until entropy says stop, verify in one pass, keep p exactly.

One round (cf. Leviathan et al. 2023, Algorithm 1, and transformers' ``_assisted_decoding``):

1. the drafter proposes x_1..x_n with distributions q_1..q_n (n chosen by the stopping rule);
2. the verifier runs once over the pending token and the draft, giving p_1..p_{n+1};
3. x_i is accepted with probability min(1, p_i(x_i)/q_i(x_i)) (greedy: while x_i = argmax p_i); at the first
   rejection a token is drawn from norm(max(0, p_i - q_i)) (greedy: argmax p_i), and after a full
   acceptance the bonus token from p_{n+1};
4. both KV caches are cropped to the accepted prefix (no recomputation);
5. the stopping rule hears how many tokens were accepted.

Without a drafter the same loop, with a `NullDrafter` that drafts nothing, is plain autoregressive decoding of
the verifier (n = 0 every round).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel

from .config import EntropyConfig
from .drafter import EntropyBasedDrafter, NullDrafter
from .caches import cached_model, check_cache_options
from .timing import Stopwatch
from ..records import GenerationResult, RoundRecord
from .round import cut_emitted
from .sampling import SamplingParams, greedy_verdict, speculative_accept

if TYPE_CHECKING:
    from .batch import BatchDecoder
    from .batch_cost import BatchCostModel


class EntropyBasedSpeculativeDecoder:
    """Lossless speculative decoding with an entropy-stopped drafter. Batch size 1.

    Args:
        drafter: the small causal LM, or None for autoregressive decoding of the verifier alone (a
            `NullDrafter`: it drafts nothing, so every round is one verifier forward over one token).
        verifier: the large causal LM whose distribution the output keeps.
        config: the drafting policy.
        kv_cache: "dynamic" (transformers' ``DynamicCache``, grows; rollback crops it) or "static" (a
            preallocated ``StaticCache`` sized per generation; rollback moves the write position), for both models.
        compile: ``torch.compile`` the forwards of both models (needs ``kv_cache="static"``): True (mode
            "reduce-overhead" on CUDA, "default" elsewhere) or a mode name. The verify length is padded to a
            few bucket sizes so compiled graphs are reused; the prefill runs eagerly. `warm_up` compiles ahead.
        cache_len: size the static cache for at least this many prompt + new tokens in every generation (an
            experiment's max_sequence_length), so every prompt shares one cache shape and one set of compiled
            graphs; a generation that needs more gets more. Default: what each generation needs.
    """

    def __init__(self, drafter: PreTrainedModel | None, verifier: PreTrainedModel,
                 config: EntropyConfig | None = None, kv_cache: str = "dynamic",
                 compile: bool | str = False, cache_len: int | None = None) -> None:
        if config is not None and not isinstance(config, EntropyConfig):
            raise ValueError(f"config: must be an EntropyConfig, got {type(config).__name__} "
                             "(a dict d becomes one with EntropyConfig(**d))")
        check_cache_options(kv_cache, compile)
        self.config = config or EntropyConfig()
        if cache_len is not None and (not isinstance(cache_len, int) or isinstance(cache_len, bool) or cache_len < 1):
            raise ValueError(f"cache_len: must be a positive integer or None, got {cache_len!r}")
        self.kv_cache, self.compile, self.cache_len = kv_cache, compile, cache_len
        if drafter is not None:
            v_d, v_v = drafter.config.vocab_size, verifier.config.vocab_size
            if v_d != v_v:
                raise ValueError(f"vocab size mismatch: drafter has {v_d} tokens, verifier has {v_v}; "
                                 "the pair must share one tokenizer and output size")
            if drafter.device != verifier.device:
                raise ValueError(f"drafter is on {drafter.device} but verifier is on {verifier.device}")
        # NaN is checked in the round's one read
        self.verifier = cached_model(verifier, kv_cache=kv_cache, compile=compile, check_nan=False)
        self.drafter: EntropyBasedDrafter | NullDrafter = (
            NullDrafter(verifier.config.vocab_size) if drafter is None
            else EntropyBasedDrafter(drafter, self.config, kv_cache=kv_cache, compile=compile))
        self._batch = None  # the batched loop and its caches, made on the first `generate_batch`
        # device -> host reads of the last `generate`, per round: the draft loop's, the drafter's once-per-round
        # statistics and the verification's ({"loop": r, "statistics": r, "verify": r})
        self.host_reads: list[dict[str, int]] = []

    @classmethod
    def autoregressive(cls, verifier: PreTrainedModel, kv_cache: str = "dynamic", compile: bool | str = False,
                       cache_len: int | None = None) -> "EntropyBasedSpeculativeDecoder":
        """The baseline: the verifier alone, one token per forward, in the same engine (a `NullDrafter`)."""
        return cls(None, verifier, kv_cache=kv_cache, compile=compile, cache_len=cache_len)

    def warm_up(self, prompt_len: int = 1, max_new_tokens: int = 1) -> None:
        """Compile every graph a generation of ``max_new_tokens`` after a ``prompt_len``-token prompt can use
        (with `cache_len`: every generation that fits it), so no compilation lands in a timed generation.
        Nothing to do without ``compile``."""
        max_length = self._max_length(prompt_len, max_new_tokens)
        self.verifier.warm_up(max_length, self.config.max_draft_len + 1)
        self.drafter.warm_up(max_length)

    def _max_length(self, prompt_len: int, max_new_tokens: int) -> int:
        """The positions a generation's caches hold at most: the committed tokens and one round's draft."""
        return max(prompt_len + max_new_tokens, self.cache_len or 0) + self.config.max_draft_len + 1

    @property
    def method(self) -> str:
        """The decoding method this decoder runs: "autoregressive" (no drafter) or "speculative"."""
        return "autoregressive" if isinstance(self.drafter, NullDrafter) else "speculative"

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        eos_token_id: int | Sequence[int] | None = None,
        ignore_eos: bool = False,
    ) -> GenerationResult:
        """Generate up to ``max_new_tokens`` tokens after ``input_ids [1, T]``.

        ``eos_token_id`` defaults to the verifier's ``generation_config``; ``ignore_eos`` disables stopping at
        EOS. The same seed gives the same tokens. With ``batch_stop="cost"`` the prompt is decoded as a batch of
        one (`generate_batch`: that rule prices the batched loop's steps).
        """
        if self.config.batch_stop == "cost" and not isinstance(self.drafter, NullDrafter):
            return self.generate_batch([input_ids], max_new_tokens, temperature, top_k, top_p, seed, eos_token_id,
                                       ignore_eos)[0]
        sampling = SamplingParams(temperature, top_k, top_p)
        sequence = self._check_input(input_ids, max_new_tokens, seed)
        eos = set() if ignore_eos else self.eos_ids(eos_token_id)
        device = self.verifier.device
        generator = torch.Generator(device=device).manual_seed(seed)
        start = time.perf_counter()

        # Prefill: both caches take the prompt and keep the logits of the first new position. A static cache is
        # sized for the whole generation.
        max_length = self._max_length(sequence.shape[1], max_new_tokens)
        with Stopwatch(device) as prefill:
            self.verifier.prefill(sequence, max_length)
            self.drafter.start(sequence, max_length)

        new_tokens: list[int] = []
        rounds: list[RoundRecord] = []
        self.host_reads = []
        ttft = 0.0
        finish_reason = "length"
        while len(new_tokens) < max_new_tokens:
            emitted, record = self._round(sequence, max_new_tokens - len(new_tokens), sampling, generator, eos)
            rounds.append(record)
            new_tokens += emitted
            sequence = torch.cat([sequence, sequence.new_tensor([emitted])], dim=1)
            ttft = ttft or time.perf_counter() - start
            if eos and emitted[-1] in eos:
                finish_reason = "eos"
                break
        return GenerationResult(
            new_tokens=new_tokens,
            rounds=rounds,
            prompt_len=int(input_ids.shape[1]),
            wall_time_s=time.perf_counter() - start,
            prefill_time_s=prefill.seconds,
            time_to_first_token_s=ttft,
            finish_reason=finish_reason,
            method=self.method,
        )

    def generate_batch(
        self,
        prompts: Sequence[torch.Tensor] | torch.Tensor,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | Sequence[int] = 0,
        eos_token_id: int | Sequence[int] | None = None,
        ignore_eos: bool = False,
        attention_mask: torch.Tensor | None = None,
        batch_costs: "BatchCostModel | None" = None,
    ) -> list[GenerationResult]:
        """Decode several prompts together (`entspec.engine.batch`): every drafter step and verifier call is
        shared by the rows still generating, and each row drafts, stops, accepts and finishes on its own.

        ``prompts``: a list of ``[1, T_i]`` prompts of any lengths, or a padded ``[B, T]`` batch with its
        ``attention_mask``. ``seed``: one per row, or one int for every row; a row's tokens depend on its
        prompt and seed only (greedy and sampled alike), not on which rows share its batch. One result per row,
        in order, each with ``batch = {"size": B, "row": i}``. Needs the dynamic KV cache.
        ``batch_costs``: the measured costs ``batch_stop="cost"`` prices drafter steps with (`calibrate_batch`, or
        `BatchCostModel.load`); kept for later calls.
        """
        from .batch import batch_prompts, batch_seeds

        if self.kv_cache != "dynamic":
            raise ValueError("kv_cache: batched decoding runs on the dynamic cache (got 'static')")
        sampling = SamplingParams(temperature, top_k, top_p)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        rows = batch_prompts(prompts, attention_mask, self.verifier.model.config.vocab_size)
        self._check_context(max(len(r) for r in rows), max_new_tokens)
        seeds = batch_seeds(seed, len(rows))
        eos = set() if ignore_eos else self.eos_ids(eos_token_id)
        batch = self._batch_decoder()
        if batch_costs is not None:
            batch.costs = batch_costs
        if self.config.batch_stop == "cost" and batch.drafter is not None and batch.costs is None:
            raise ValueError("batch_costs: batch_stop='cost' needs a measured BatchCostModel "
                             "(decoder.calibrate_batch(prompt) or BatchCostModel.load(path))")
        if batch.costs is not None and batch.costs.layout != self.config.batch_layout:
            raise ValueError(f"batch_costs: measured in the {batch.costs.layout} layout; this decoder runs the "
                             f"{self.config.batch_layout} one (calibrate in its layout)")
        return batch.generate(rows, max_new_tokens, sampling, seeds, eos)

    def _batch_decoder(self) -> "BatchDecoder":
        from .batch import BatchDecoder

        if self._batch is None:
            drafter = None if isinstance(self.drafter, NullDrafter) else self.drafter.lm.model
            self._batch = BatchDecoder(drafter, self.verifier.model, self.config)
        return self._batch

    def calibrate_batch(self, prompt: torch.Tensor, rows: Sequence[int] = (1, 2, 4, 8),
                        widths: Sequence[int] | None = None) -> "BatchCostModel":
        """Measure what batched rounds cost on this pair and device (`entspec.engine.batch_cost`) with the
        ``[1, T]`` prompt cached in every row; later `generate_batch` calls price drafter steps with it."""
        from .batch_cost import calibrate_batch

        if isinstance(self.drafter, NullDrafter):
            raise ValueError("calibrate_batch: autoregressive decoding drafts nothing to price")
        costs = calibrate_batch(self.drafter.lm.model, self.verifier.model, prompt[0].tolist(), tuple(rows),
                                **({} if widths is None else {"widths": tuple(widths)}),
                                layout=self.config.batch_layout)
        self._batch_decoder().costs = costs
        return costs

    def _round(self, sequence: torch.Tensor, budget: int, sampling: SamplingParams,
               generator: torch.Generator, eos: set[int]) -> tuple[list[int], RoundRecord]:
        """One draft-verify round after the committed ``sequence [1, L]``; returns the emitted tokens."""
        round_start = time.perf_counter()
        length = sequence.shape[1]

        # 1. Draft: at most budget - 1 tokens, since the verifier always adds one of its own; none while the
        #    gate finds that speculation does not pay, and never with the null drafter (autoregressive).
        draft = self.drafter.propose(sequence, budget, sampling, generator, eos)
        n = len(draft)

        with Stopwatch(self.verifier.device) as verify:
            # 2. Verify: one forward over the pending token (none after the prefill) and the draft
            #    -> logits for p_1..p_{n+1}.
            pending = sequence[:, len(self.verifier):]
            target_logits = self.verifier.extend(torch.cat([pending, draft.tokens.view(1, n)], dim=1), n + 1)

            # 3. Accept: argmax match (greedy) or Leviathan Algorithm 1 (sampling), on the device.
            if sampling.greedy:
                num_accepted, token, ratios = greedy_verdict(draft.tokens, target_logits)
            else:
                target_probs = torch.softmax(sampling.process(target_logits), dim=-1)
                num_accepted, token, ratios = speculative_accept(
                    draft.tokens[None], draft.probs[None], target_probs[None], generator)
                num_accepted, token, ratios = num_accepted[0], token[0], ratios[0]
            # One device -> host read per round: [accepted, next token, NaN?, accept probs (n), the draft's
            # statistics the drafter has not read (its tokens, entropies, ...)].
            head = torch.stack([num_accepted, token, torch.isnan(target_logits).any()]).double()
            verdict = torch.cat([head, ratios.double(), *(t.double() for t in draft.unread.values())]).tolist()
            if verdict[2]:
                raise ValueError(f"{type(self.verifier.model).__name__} produced NaN logits "
                                 "(check the dtype and the weights)")
            draft.settle(verdict[3 + n:])  # the record's statistics; NaN check; an unread draft cut at its EOS
            n = len(draft)
            accepted, next_token, accept_probs = min(int(verdict[0]), n), int(verdict[1]), verdict[3:3 + n]

        # 4. Roll back: the verifier keeps the accepted prefix; its own token is fed next round.
        self.verifier.crop(length + accepted)
        emitted = cut_emitted(draft.token_ids[:accepted] + [next_token], budget, eos)
        # 5. The drafter keeps the accepted prefix too, and its rule and gate hear the verdict.
        self.drafter.update(draft, accepted)
        self.host_reads.append({**draft.host_reads, "verify": 1})

        record = RoundRecord(
            drafted=n,
            accepted=accepted,
            emitted=len(emitted),
            entropies=list(draft.state.entropies),
            stop_reason=draft.stop_reason,
            draft_time_s=draft.seconds,
            verify_time_s=verify.seconds,
            round_time_s=time.perf_counter() - round_start,
            draft_token_probs=list(draft.state.token_probs),
            accept_probs=accept_probs,
            entropies_by_type=draft.entropies_by_type,
            threshold=draft.threshold,
        )
        return emitted, record

    def _check_input(self, input_ids: torch.Tensor, max_new_tokens: int, seed: int) -> torch.Tensor:
        for name, value in (("max_new_tokens", max_new_tokens), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a [1, T] LongTensor")
        if input_ids.shape[0] != 1:
            raise ValueError(f"input_ids: batch size must be 1, got {input_ids.shape[0]} "
                             "(speculative decoding here runs one sequence at a time)")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: the prompt needs at least one token (e.g. BOS)")
        if input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be integer token ids (torch.long), got {input_ids.dtype}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        vocab = self.verifier.model.config.vocab_size
        if int(input_ids.max()) >= vocab or int(input_ids.min()) < 0:
            raise ValueError(f"input_ids: token id out of range for a vocabulary of {vocab}")
        self._check_context(input_ids.shape[1], max_new_tokens)
        return input_ids.to(self.verifier.device)

    def _check_context(self, prompt_len: int, max_new_tokens: int) -> None:
        """Prompt + new tokens must fit the verifier's context (positions past it are not the model's)."""
        from ..models.context import context_length

        context = context_length(self.verifier.model)
        if context is not None and prompt_len + max_new_tokens > context:
            raise ValueError(f"max_new_tokens: {prompt_len} prompt + {max_new_tokens} new tokens exceed the "
                             f"verifier's context of {context} positions")

    def eos_ids(self, eos_token_id: int | Sequence[int] | None) -> set[int]:
        """The EOS token ids a generation stops at: ``eos_token_id``, else the verifier's generation config's."""
        if eos_token_id is None:
            gen_cfg = getattr(self.verifier.model, "generation_config", None)
            eos_token_id = getattr(gen_cfg, "eos_token_id", None)
        if eos_token_id is None:
            return set()
        ids = [eos_token_id] if not isinstance(eos_token_id, (list, tuple, set)) else list(eos_token_id)
        for t in ids:
            if not isinstance(t, int) or isinstance(t, bool) or t < 0:
                raise ValueError(f"eos_token_id: must be a token id (int >= 0) or a list of them, got {eos_token_id!r}")
        return set(ids)

