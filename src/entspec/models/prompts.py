"""Prompt -> token ids: plain text (a continuation) or chat messages (the chat template)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Prompt = str | Sequence[Mapping[str, str]]


def render_prompt(tokenizer, prompt: Prompt) -> tuple[str, bool]:
    """The prompt as text, and whether the tokenizer should add its special tokens (bos) itself.

    Chat messages (``[{"role": "user", "content": ...}]``) go through the tokenizer's chat template with
    ``add_generation_prompt=True`` (the template already holds any bos); without a template their
    contents are joined with newlines. Plain text is returned unchanged.
    """
    if isinstance(prompt, str):
        return prompt, True
    messages = list(prompt)
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise ValueError(f"chat message {i} needs 'role' and 'content' keys, got {sorted(m)}")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, False
    return "\n".join(m["content"] for m in messages), True


def encode_prompt(tokenizer, prompt: Prompt) -> torch.LongTensor:
    """Token ids of ``prompt``, shape ``[1, T]`` (``T >= 1``), dtype long, on the CPU."""
    text, add_special = render_prompt(tokenizer, prompt)
    ids = tokenizer(text, add_special_tokens=add_special, return_tensors="pt")["input_ids"]
    if ids.shape[-1] == 0:
        raise ValueError("prompt encodes to zero tokens")
    return ids.long()
