"""`StaticCachedModel`: `CachedModel` on a preallocated KV cache, optionally with a compiled forward (gpt-fast style).

The cache is transformers' ``StaticCache``: per layer a ``[1, heads, capacity, head_dim]`` key and value tensor
written in place at a write position (the layer's ``cumulative_length``, a device tensor), and a causal mask over
the whole capacity. Rollback moves the write position back; nothing is copied or freed. The entries past the
position are stale (rejected draft tokens, bucket padding) and harmless: a query at position p attends to keys at
positions <= p only, and every position a forward's queries can see below its own was written by that forward or
an earlier accepted one, so a stale entry is overwritten before any query can see it.

With ``compile`` the model forward is ``torch.compile``d (``dynamic=False``). So that compiled graphs are reused,
the number of new tokens m is padded up to a bucket (1, 2, 4, 8, 16, 32): the padding tokens go after the real
ones, so causal attention keeps them out of every real position's result; they are written to the cache past the
real tokens, and the write position is then set back to the end of the real ones (their entries are stale). The
prefill, and any call longer than the largest bucket, runs eagerly. The capacity is rounded up to a power of two
(at least 128), so prompts of similar length share one cache shape and one set of graphs; the cache of each
capacity is kept, so a decoder reused across prompts writes into the same tensors again.

Positions are tracked as a Python int, so ``len()`` and rollback never read from the device.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, StaticCache

from .kv import CachedModel

BUCKETS = (1, 2, 4, 8, 16, 32)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MIN_CAPACITY = 128
DEFAULT_NEW_POSITIONS = 512  # room after the prompt when `prefill` is not told the generation's length
RECOMPILE_LIMIT = 64  # graphs per code object: buckets x cache capacities x models of one class


class EngineStaticCache(StaticCache):
    """``StaticCache`` whose length, outside compiled code, is the engine's Python int.

    transformers derives the new positions and the mask's offset from ``get_seq_length()``, a device tensor on a
    static cache: eagerly, comparing it (``q_offset == 0`` in the SDPA mask) is a device -> host read per forward.
    The engine knows the length on the host, so eager forwards read nothing; compiled code traces the tensor
    (``is_compiling`` is checked first, so dynamo never guards on the int).
    """

    host_length: int | None = None

    def get_seq_length(self, layer_idx: int = 0):
        if not torch.compiler.is_compiling() and self.host_length is not None:
            return self.host_length
        return super().get_seq_length(layer_idx)


def compile_mode(compile: bool | str, device: torch.device) -> str | None:
    """The ``torch.compile`` mode for ``compile`` (None: eager). True picks "reduce-overhead" (CUDA graphs) on CUDA
    and "default" elsewhere."""
    if compile is False:
        return None
    if compile is True:
        return "reduce-overhead" if device.type == "cuda" else "default"
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile: mode must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    return compile


def capacity_for(positions: int) -> int:
    """The cache capacity for ``positions`` positions: the next power of two, at least `MIN_CAPACITY`."""
    return max(MIN_CAPACITY, 1 << (max(positions, 1) - 1).bit_length())


class StaticCachedModel(CachedModel):
    """`CachedModel` on a ``StaticCache``: the same interface (prefill, extend, forward, crop, len), no reallocation
    during a generation, rollback by moving the write position, and optionally a compiled forward.

    Args:
        model: the causal LM (full-attention layers; sliding-window layers are refused).
        check_nan: raise on NaN logits at each forward (one device -> host read).
        compile: False, True (see `compile_mode`) or a ``torch.compile`` mode name.
        buckets: the padded lengths of compiled forwards (default `BUCKETS`).
    """

    def __init__(self, model: PreTrainedModel, check_nan: bool = True, compile: bool | str = False,
                 buckets: tuple[int, ...] | None = None) -> None:
        super().__init__(model, check_nan=check_nan)
        self.mode = compile_mode(compile, model.device)
        self.buckets = tuple(sorted(buckets or BUCKETS)) if self.mode else ()
        self.capacity = 0
        # One cache per capacity, kept: a decoder reused across prompts finds the same tensors again (CUDA graphs
        # recorded on them stay valid). The write position of each is its `host_length` (a Python int).
        self._caches: dict[int, EngineStaticCache] = {}
        self._compiled = None
        if self.mode:
            _raise_recompile_limit()
            self._compiled = torch.compile(model.forward, mode=self.mode, dynamic=False, fullgraph=True)
        self.compiled_calls = self.eager_calls = 0  # forwards through the compiled graphs / eagerly

    def __len__(self) -> int:
        return 0 if self.cache is None else self.cache.host_length

    def reset(self, max_length: int | None = None) -> None:
        """An empty cache with room for ``max_length`` positions (default: the current one, if any)."""
        self.next_logits = None
        if max_length is not None or self.cache is None:
            extra = self.buckets[-1] if self.buckets else 0  # a padded call may write past the real tokens
            capacity = capacity_for((max_length or DEFAULT_NEW_POSITIONS) + extra)
            if capacity not in self._caches:
                cache = EngineStaticCache(config=self.model.config, max_cache_len=capacity)
                _check_layers(cache, self.model)
                cache.host_length = 0
                self._caches[capacity] = cache
            self.cache, self.capacity = self._caches[capacity], capacity
        self._move(-len(self))  # keys and values stay: every entry past the position is stale

    def warm_up(self, max_length: int, up_to: int | None = None) -> None:
        """Compile (and, with CUDA graphs, record) the graphs of every bucket a forward of 1..``up_to`` tokens uses
        (default: every bucket), on the cache for ``max_length`` positions; the cache is left empty. Eagerly:
        nothing to do."""
        if not self.mode:
            return
        up_to = min(up_to or self.buckets[-1], self.buckets[-1])  # longer forwards run eagerly
        sizes = sorted({next(b for b in self.buckets if b >= m) for m in range(1, up_to + 1)})
        device = self.model.device
        self.prefill(torch.zeros(1, 1, dtype=torch.long, device=device), max_length)
        for size in sizes:
            for _ in range(3):  # compile, then CUDA graph warm-up and recording
                self.forward(torch.zeros(1, size, dtype=torch.long, device=device))
                self.crop(1)
        self.reset()

    def prefill(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        """Cache ``prompt [1, T]`` (eagerly) in a cache with room for ``max_length`` positions (default: the
        prompt and `DEFAULT_NEW_POSITIONS` more); keep the logits of the position after it."""
        self.reset(max_length or prompt.shape[1] + DEFAULT_NEW_POSITIONS)
        self.next_logits = self.forward(prompt)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
        """Run ``input_ids [1, m]`` after the cached prefix; return the last ``logits_to_keep`` logits ``[k, V]``."""
        m, length = input_ids.shape[1], len(self)
        if length + m > self.capacity:
            raise ValueError(f"static KV cache full: {length} + {m} positions > capacity {self.capacity} "
                             "(prefill was given a max_length that is too small)")
        bucket = next((b for b in self.buckets if b >= m), None) if length else None  # the prefill runs eagerly
        if bucket is None or length + bucket > self.capacity:
            out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=logits_to_keep,
                             **{self._cache_kwarg: self.cache})
            logits = out.logits[0, -logits_to_keep:]
            self.eager_calls += 1
            self.cache.host_length += m  # the layers advanced their positions by m
        else:
            # A fresh [1, bucket] tensor (same strides and dispatch keys every call: no recompile for a sliced
            # input), padded after the real tokens: causal attention keeps the padding out of their results.
            padded = input_ids.new_zeros(1, bucket)
            padded[:, :m] = input_ids
            if self.mode in ("reduce-overhead", "max-autotune"):  # CUDA graphs: a new step may overwrite outputs
                torch.compiler.cudagraph_mark_step_begin()
            out = self._compiled(input_ids=padded, use_cache=True, logits_to_keep=0,
                                 **{self._cache_kwarg: self.cache})
            logits = out.logits[0, m - logits_to_keep:m].clone()  # our own copy of the graph's output buffer
            self.compiled_calls += 1
            self.cache.host_length += bucket  # the layers advanced by the bucket; the padding's entries are stale:
            self._move(m - bucket)  # back to the end of the real tokens
        if self.check_nan and torch.isnan(logits).any():
            raise ValueError(f"{type(self.model).__name__} produced NaN logits (check the dtype and the weights)")
        return logits

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions: the write position moves back (no copy, no read)."""
        extra = len(self) - length
        if extra > 0:
            self._move(-extra)
            self.next_logits = None

    @torch.inference_mode()
    def _move(self, delta: int) -> None:
        """Move every layer's write position by ``delta`` (one fused op on CUDA; no device -> host read)."""
        if delta:
            self.cache.host_length += delta
            torch._foreach_add_([layer.cumulative_length for layer in self.cache.layers], delta)


def _check_layers(cache: StaticCache, model: PreTrainedModel) -> None:
    """Refuse caches whose rollback is not a move of one write position per layer (sliding windows, old layouts)."""
    for layer in getattr(cache, "layers", None) or [cache]:  # transformers 4.x: no layers (refused below)
        if getattr(layer, "is_sliding", False) or not isinstance(getattr(layer, "cumulative_length", None),
                                                                 torch.Tensor):
            raise ValueError(f"kv_cache='static': {type(model).__name__} has {type(layer).__name__} layers, whose "
                             "rollback is not supported here (sliding window or another transformers cache "
                             "layout); use kv_cache='dynamic'")


def _raise_recompile_limit() -> None:
    """Allow enough graphs per forward code object: one per bucket and cache capacity, drafter and verifier alike."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
            return
