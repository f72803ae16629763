"""A model forward over new tokens on its own KV cache, written once for transformers 4.x and 5.x."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PreTrainedModel


class CachedModel:
    """A causal LM with its KV cache: feed tokens, read logits, roll back with ``crop``.

    The cache always holds a prefix of the committed sequence; `extend` feeds the tokens after it. After
    `prefill` the cache holds the whole prompt and the logits of the first new position are kept, so no
    model call is spent twice on the prompt's last token (as in transformers' ``generate``).
    """

    def __init__(self, model: PreTrainedModel, check_nan: bool = True) -> None:
        self.model = model
        # NaN logits raise at the forward (one device -> host read per call); a caller that checks NaN itself
        # once per round (the drafter) turns this off.
        self.check_nan = check_nan
        self._cache_kwarg = cache_kwarg(model)
        self.cache: DynamicCache | None = None
        self.sliding = False  # the cache has sliding-window layers (set by `prefill`)
        self.next_logits: torch.Tensor | None = None  # [1, V] for the position after the cache, if known

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset(self) -> None:
        self.next_logits = None
        self.cache = new_cache(self.model)

    def __len__(self) -> int:
        """Number of positions in the cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
        """Run ``input_ids [1, m]`` after the cached prefix; return the last ``logits_to_keep`` logits ``[k, V]``."""
        out = self.model(
            input_ids=input_ids,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            **{self._cache_kwarg: self.cache},
        )
        logits = out.logits[0, -logits_to_keep:]
        if self.check_nan and torch.isnan(logits).any():
            raise ValueError(f"{type(self.model).__name__} produced NaN logits (check the dtype and the weights)")
        return logits

    def prefill(self, prompt: torch.Tensor, max_length: int | None = None) -> None:
        """Empty the cache, then cache ``prompt [1, T]`` and keep the logits of the position after it.

        ``max_length`` is the most positions the cache will hold in this generation: a static cache is sized
        by it (`StaticCachedModel`); the dynamic one grows as needed and ignores it."""
        self.reset()
        self.next_logits = self.forward(prompt)
        # Sliding-window layers (Mistral, Gemma 2/3) drop states past the window; from now on they keep them until
        # `crop`, so a rejected draft can be rolled back (as transformers' own assisted decoding does). Activated
        # after the prefill, so a long prompt's states past the window are never held.
        self.sliding = any(getattr(layer, "is_sliding", False) for layer in getattr(self.cache, "layers", []))
        if self.sliding:
            self.cache.activate_past_recording()

    def warm_up(self, max_length: int, up_to: int | None = None) -> None:
        """Prepare forwards of 1..``up_to`` new tokens on a cache of ``max_length`` positions (compiled graphs);
        nothing to prepare for a dynamic cache."""

    def extend(self, input_ids: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Feed ``input_ids [1, m]`` after the cache; logits ``[num_logits, V]`` of the last positions.

        The first of them may be the kept prefill logits (then ``m = num_logits - 1``, possibly 0).
        """
        kept, self.next_logits = self.next_logits, None
        if kept is None or input_ids.shape[1] != num_logits - 1:  # kept logits are of an earlier position now
            return self.forward(input_ids, num_logits)
        if num_logits == 1:
            return kept
        return torch.cat([kept, self.forward(input_ids, num_logits - 1)])

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions (drop rejected draft positions; no recomputation)."""
        extra = len(self) - length
        if extra > 0:
            self.cache.crop(-extra)  # negative: remove the last `extra` positions (4.x and 5.x alike)
            self.next_logits = None
        elif self.sliding:
            self.cache.crop(0)  # sliding layers: drop the recorded states the window no longer needs


def cache_kwarg(model: PreTrainedModel) -> str:
    """The forward keyword of the KV cache: transformers 5.x renamed ``past_key_values`` to ``cache``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(model: PreTrainedModel) -> DynamicCache:
    """An empty ``DynamicCache`` for ``model`` (older transformers take no config argument)."""
    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()
