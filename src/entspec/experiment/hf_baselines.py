"""The external baselines, run through transformers itself: `generate` alone and assisted generation.

Hugging Face assisted generation (`generate(assistant_model=...)`) is configured through the drafter's
generation_config: `num_assistant_tokens`, `num_assistant_tokens_schedule` ("constant" / "heuristic") and
`assistant_confidence_threshold` (0.4 by default, re-tuned online from an ROC curve when scikit-learn is
installed). Its rounds are internal to transformers, so the trace has no rounds; forward hooks count the
verifier and drafter calls instead.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import PreTrainedModel
from transformers.generation.streamers import BaseStreamer

from ..engine.timing import synchronize
from ..records import GenerationResult

DEFAULT = "default"  # leave a generation_config field at transformers' own default


def hf_generate(
    verifier: PreTrainedModel,
    input_ids: torch.Tensor,
    *,
    drafter: PreTrainedModel | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    ignore_eos: bool = False,
    num_assistant_tokens: int | str = DEFAULT,
    schedule: str = DEFAULT,
    confidence_threshold: float | str = DEFAULT,
) -> GenerationResult:
    """`verifier.generate` alone (``drafter=None``) or with ``assistant_model=drafter``, timed like entspec.

    ``num_assistant_tokens``, ``schedule`` and ``confidence_threshold`` override the drafter's generation
    config for this call only (``confidence_threshold=0`` disables the confidence stop: plain constant k).
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError("input_ids must be a [1, T] LongTensor")
    input_ids = input_ids.to(verifier.device)
    kwargs = _generate_kwargs(max_new_tokens, temperature, top_k, top_p, eos_token_id, ignore_eos)
    kwargs.update(attention_mask=torch.ones_like(input_ids))
    if drafter is not None:
        kwargs.update(assistant_model=drafter)
    overrides = {"num_assistant_tokens": num_assistant_tokens, "num_assistant_tokens_schedule": schedule,
                 "assistant_confidence_threshold": confidence_threshold}

    torch.manual_seed(seed)
    clock = _FirstTokenClock()
    with _drafter_settings(drafter, overrides), _count_calls(verifier) as verifier_calls, \
            _count_calls(drafter) as drafter_calls:
        synchronize(verifier.device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = verifier.generate(input_ids, streamer=clock, **kwargs)
        synchronize(verifier.device)
        wall = time.perf_counter() - start
    new_tokens = output[0, input_ids.shape[1]:].tolist()
    eos = _eos_set(verifier, eos_token_id)
    finished_by_eos = not ignore_eos and bool(new_tokens) and new_tokens[-1] in eos
    return GenerationResult(
        new_tokens=new_tokens,
        rounds=[],
        prompt_len=int(input_ids.shape[1]),
        wall_time_s=wall,
        prefill_time_s=float("nan"),
        time_to_first_token_s=clock.first - start,
        finish_reason="eos" if finished_by_eos else "length",
        method="hf_assisted" if drafter is not None else "hf_generate",
        counters={"verifier_calls": verifier_calls[0], "drafter_calls": drafter_calls[0]},
    )


class _FirstTokenClock(BaseStreamer):
    """When ``generate`` hands out its first new token(s) (its first ``put`` is the prompt): time to first token.
    A streamer reads each step's tokens to the host, as any streaming use of ``generate`` does."""

    def __init__(self) -> None:
        self.puts, self.first = 0, float("nan")

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def hf_generate_batch(
    verifier: PreTrainedModel,
    prompts: Sequence[torch.Tensor],
    *,
    pad_token_id: int,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    ignore_eos: bool = False,
) -> list[GenerationResult]:
    """`verifier.generate` on ``prompts`` (``[1, T_i]`` each) as one left-padded batch: plain decoding's
    throughput baseline at batch size B. Every row costs a forward until the last row finishes; a row's
    ``counters`` say how many verifier calls the batch made, its ``batch`` which batch it ran in, its time to first
    token when the batch's first tokens came out."""
    device = verifier.device
    width = max(p.shape[1] for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - p.shape[1]:], mask[i, width - p.shape[1]:] = p[0], 1
    kwargs = _generate_kwargs(max_new_tokens, temperature, top_k, top_p, eos_token_id, ignore_eos)
    kwargs.update(attention_mask=mask.to(device), pad_token_id=pad_token_id)
    torch.manual_seed(seed)
    clock = _FirstTokenClock()
    with _count_calls(verifier) as calls:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = verifier.generate(ids.to(device), streamer=clock, **kwargs)
        synchronize(device)
        wall = time.perf_counter() - start
    eos = set() if ignore_eos else _eos_set(verifier, eos_token_id)
    results = []
    for i, row in enumerate(output[:, width:].tolist()):
        end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        results.append(GenerationResult(
            new_tokens=row[:end], rounds=[], prompt_len=int(prompts[i].shape[1]), wall_time_s=wall,
            prefill_time_s=float("nan"), time_to_first_token_s=clock.first - start,
            finish_reason="eos" if end < len(row) or (row and row[-1] in eos) else "length", method="hf_generate",
            counters={"verifier_calls": calls[0]}, batch={"size": len(prompts), "row": i}))
    return results


def _generate_kwargs(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                     eos_token_id: int | Sequence[int] | None, ignore_eos: bool) -> dict:
    """``generate``'s keywords for entspec's generation settings (the same sampling for every baseline)."""
    kwargs: dict = dict(max_new_tokens=max_new_tokens)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)
    else:
        kwargs.update(do_sample=False)
    if ignore_eos:
        kwargs.update(eos_token_id=None, min_new_tokens=max_new_tokens)
    elif eos_token_id is not None:
        kwargs.update(eos_token_id=eos_token_id)
    return kwargs


@contextmanager
def _drafter_settings(drafter: PreTrainedModel | None, overrides: dict) -> Iterator[None]:
    if drafter is None:
        yield
        return
    saved = copy.deepcopy(drafter.generation_config)
    try:
        for key, value in overrides.items():
            if value != DEFAULT:
                setattr(drafter.generation_config, key, value)
        yield
    finally:
        drafter.generation_config = saved


@contextmanager
def _count_calls(model: PreTrainedModel | None) -> Iterator[list[int]]:
    """Count top-level forward calls of ``model`` (one per verifier call / drafter step)."""
    counter = [0]
    if model is None:
        yield counter
        return

    def hook(*_: object) -> None:
        counter[0] += 1

    handle = model.register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def _eos_set(model: PreTrainedModel, eos_token_id: int | Sequence[int] | None) -> set[int]:
    eos = eos_token_id if eos_token_id is not None else model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(t) for t in eos}
