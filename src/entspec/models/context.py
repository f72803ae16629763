"""How many positions a model can attend to, and the check that a prompt plus its budget fits in them."""

from __future__ import annotations

from typing import Any

from entspec.validate import ConfigError

# config.json fields that hold a model's maximum number of positions, by architecture family
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(model_or_config: Any) -> int | None:
    """The maximum positions of a model (or its ``config``); None when the config does not say."""
    config = getattr(model_or_config, "config", model_or_config)
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(prompt_id: str, prompt_tokens: int, max_new_tokens: int, context: int | None) -> None:
    """ConfigError naming the prompt when it has no tokens or when prompt + new tokens exceed ``context``."""
    if prompt_tokens == 0:
        raise ConfigError(f"prompt {prompt_id}: encodes to no tokens (empty text?)")
    if context is not None and prompt_tokens + max_new_tokens > context:
        raise ConfigError(f"prompt {prompt_id}: {prompt_tokens} prompt + {max_new_tokens} new tokens exceed the "
                          f"models' context of {context} positions; shorten the prompt or lower max_new_tokens")
