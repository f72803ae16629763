"""Named datasets and the one entry point, :func:`load_prompts` (a dataset name or a local file).

A dataset is a loader ``(split, prefix_words) -> list[Prompt]`` registered under a name with
:func:`register_dataset`. The built-in ones (:mod:`entspec.data.builtin`, :mod:`entspec.data.spec6`)
register themselves when :mod:`entspec.data` is imported.

    >>> prompts = load_prompts("mix", num_samples=30, seed=0)   # 10 code, 10 math, 10 chat
    >>> prompts = load_prompts("bbc_news", num_samples=50, tokenizer=tok, max_prompt_tokens=128)
    >>> prompts = load_prompts("my_prompts.jsonl")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .local import LOCAL_SUFFIXES, load_local
from .prompts import DatasetError, Prompt, sample_prompts, truncate_to_tokens

DEFAULT_PREFIX_WORDS = 64  # continuation prompts: words kept as the prompt

# A loader takes (split, prefix_words) and returns every prompt of that split in a fixed order.
Loader = Callable[[str, int], list[Prompt]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Loader
    description: str
    splits: tuple[str, ...]


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, splits: Sequence[str] = ("test",)) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(split, prefix_words) -> list[Prompt]`` under ``name``.

    The first line of the loader's docstring is the description that :func:`list_datasets` shows.
    """

    def wrap(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered")
        doc = (loader.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = DatasetSpec(name, loader, doc[0] if doc else "", tuple(splits))
        return loader

    return wrap


def list_datasets() -> dict[str, str]:
    """Registered dataset names mapped to one-line descriptions (local files are not listed)."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


# ---------------------------------------------------------------------------------------------------------
# The entry point and its checks
# ---------------------------------------------------------------------------------------------------------


def load_prompts(name_or_path: str | Path, *, split: str = "test", num_samples: int | None = None,
                 seed: int = 0, categories: Iterable[str] | None = None, tokenizer: Any = None,
                 max_prompt_tokens: int | None = None,
                 prefix_words: int = DEFAULT_PREFIX_WORDS, exclude: Iterable[str] | None = None) -> list[Prompt]:
    """Load a built-in dataset (see :func:`list_datasets`) or a local ``.jsonl``/``.txt``/``.csv`` file.

    Args:
        name_or_path: a registered dataset name, or a path to a local file (see :func:`load_local`).
        split: the dataset split; the offline datasets have only ``"test"``; ignored for local files.
        num_samples: how many prompts; ``None`` = all. Sampled by :func:`sample_prompts`: deterministic
            in ``seed`` and stratified by ``category``, so each category keeps its share.
        seed: the sampling seed.
        categories: keep only prompts whose ``category`` or ``subcategory`` is one of these (applied
            before sampling), e.g. ``["math"]`` or ``["writing", "roleplay"]`` for ``mix``.
        tokenizer, max_prompt_tokens: with both, continuation prompts are cut to exactly
            ``max_prompt_tokens`` tokens (their source is first cut to ``max(prefix_words,
            max_prompt_tokens)`` words). Chat prompts are never cut.
        prefix_words: continuation prompts: the number of whitespace-separated words kept.
        exclude: prompt ids left out before sampling (e.g. the prompts a rule was tuned on).

    Raises:
        DatasetError: unknown name, missing or malformed file, missing field/column, bad argument.
        DatasetUnavailableError: the dataset needs the network and it is not reachable.
    """
    if prefix_words < 1:
        raise DatasetError(f"prefix_words must be >= 1, got {prefix_words}")
    if (tokenizer is None) != (max_prompt_tokens is None):
        raise DatasetError("tokenizer and max_prompt_tokens must be given together")
    words = max(prefix_words, max_prompt_tokens or 0)
    prompts = _load_all(name_or_path, split, words)
    _check_prompts(prompts, name_or_path)
    unknown = sorted(set(exclude or ()) - {p.id for p in prompts})
    if unknown:  # a typo must not let tuning prompts into an evaluation
        raise DatasetError(f"exclude: {unknown[0]!r} is not a prompt id of {name_or_path} "
                           f"({len(unknown)} unknown id{'s' if len(unknown) > 1 else ''})")
    if categories is not None:
        prompts = _filter_categories(prompts, categories, name_or_path)
    if exclude:
        left_out = set(exclude)
        prompts = [p for p in prompts if p.id not in left_out]
        if not prompts:
            raise DatasetError(f"exclude: leaves no prompt of {name_or_path}")
    prompts = sample_prompts(prompts, num_samples, seed=seed)
    if tokenizer is not None:
        if max_prompt_tokens < 1:
            raise DatasetError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
        prompts = [truncate_to_tokens(p, tokenizer, max_prompt_tokens) for p in prompts]
    return prompts


def _load_all(name_or_path: str | Path, split: str, prefix_words: int) -> list[Prompt]:
    """Every prompt of a registered dataset's split, or of a local file."""
    name = str(name_or_path)
    if name in _REGISTRY:
        spec = _REGISTRY[name]
        if split not in spec.splits:
            raise DatasetError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(spec.splits)})")
        return spec.loader(split, prefix_words)
    if name.lower().endswith(LOCAL_SUFFIXES) or Path(name).exists():
        return load_local(name)
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)}; "
                       f"or a path to a {'/'.join(LOCAL_SUFFIXES)} file")


def _check_prompts(prompts: list[Prompt], source: Any) -> None:
    """There are prompts, ids are unique (they key the results rows), none is empty; errors name the prompt."""
    if not prompts:
        raise DatasetError(f"{source}: no prompts")
    first: dict[str, int] = {}
    for i, p in enumerate(prompts, start=1):
        if p.id in first:
            raise DatasetError(f"{source}: prompt id {p.id!r} occurs twice (prompts {first[p.id]} and {i}); "
                               "ids must be unique")
        first[p.id] = i
        empty = not p.text.strip() if p.text is not None else not any(str(m["content"]).strip() for m in p.messages)
        if empty:
            raise DatasetError(f"{source}: prompt {p.id!r} (prompt {i}) is empty")


def _filter_categories(prompts: list[Prompt], categories: Iterable[str], source: Any) -> list[Prompt]:
    """Prompts whose category or subcategory is wanted; an unknown category is an error."""
    wanted = set(categories)
    present = {p.category for p in prompts} | {p.subcategory for p in prompts if p.subcategory}
    if unknown := wanted - present:
        raise DatasetError(f"{source}: no categories {sorted(unknown)} (has: {', '.join(sorted(present))})")
    return [p for p in prompts if p.category in wanted or p.subcategory in wanted]
