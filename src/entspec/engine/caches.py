"""Which KV cache a model runs on: transformers' growing ``DynamicCache`` or a preallocated ``StaticCache``."""

from __future__ import annotations

from transformers import PreTrainedModel

from .kv import CachedModel
from .static_kv import StaticCachedModel

KV_CACHES = ("dynamic", "static")


def cached_model(model: PreTrainedModel, kv_cache: str = "dynamic", compile: bool | str = False,
                 check_nan: bool = True) -> CachedModel:
    """A `CachedModel` on transformers' ``DynamicCache`` (``kv_cache="dynamic"``) or a `StaticCachedModel` on a
    preallocated ``StaticCache`` (``"static"``), optionally with a ``torch.compile``d forward.

    ``compile``: False; True (mode "reduce-overhead" on CUDA, "default" elsewhere); or a ``torch.compile``
    mode name. Compiling needs the static cache (a growing cache changes every shape at every step)."""
    check_cache_options(kv_cache, compile)
    if kv_cache == "dynamic":
        return CachedModel(model, check_nan=check_nan)
    return StaticCachedModel(model, check_nan=check_nan, compile=compile)


def check_cache_options(kv_cache: str, compile: bool | str) -> None:
    """Refuse an unknown cache kind, a compile setting that is not a bool or mode name, and compile without the
    static cache (one line each)."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache: must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
    if not isinstance(compile, (bool, str)) or compile == "":
        raise ValueError(f"compile: must be True, False or a torch.compile mode name, got {compile!r}")
    if compile is not False and kv_cache != "static":
        raise ValueError("compile: needs kv_cache='static' (a dynamic cache changes shape every step, so the "
                         "compiled graphs would never be reused)")
