"""The engine's KV-cache paths for parametrized tests: dynamic, static, and static + torch.compile (CPU inductor).

On the compiled path every forward of up to `FAST_BUCKET` tokens is padded to that one size, so a model shape
compiles one graph (~20 s on a CPU, once per process and cache capacity; inductor's disk cache makes reruns
cheaper) and the padding is exercised on every call.
"""

from __future__ import annotations

import contextlib

import pytest

PATHS = ("dynamic", "static", "compiled")
FAST_BUCKET = 8  # > every verify length of the fast tests (max_draft_len <= 5 -> at most 7 tokens)


def decoder_kwargs(path: str) -> dict:
    """The `EntropyBasedSpeculativeDecoder` keywords of a path."""
    return {"dynamic": {}, "static": dict(kv_cache="static"),
            "compiled": dict(kv_cache="static", compile=True)}[path]


@contextlib.contextmanager
def buckets_for(path: str, buckets: tuple[int, ...] = (FAST_BUCKET,)):
    """On the compiled path, pad to ``buckets`` (default: one size) while the block runs."""
    if path != "compiled":
        yield
        return
    from entspec.engine import static_kv

    saved, static_kv.BUCKETS = static_kv.BUCKETS, buckets
    try:
        yield
    finally:
        static_kv.BUCKETS = saved


def slow_case(*values):
    """``pytest.param(*values)`` marked slow (the compiled path's larger cases: a graph per model shape)."""
    return pytest.param(*values, marks=pytest.mark.slow)
