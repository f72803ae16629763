"""Wiki markup -> plain prose: the articles of a MediaWiki XML dump, and WikiText rows grouped into articles.

Regex-based, good enough for prompts, not a full parser. Pure functions of their input (no I/O): the
datasets that read them are in :mod:`entspec.data.builtin`.
"""

from __future__ import annotations

import html
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

_DISAMBIGUATION = re.compile(r"\{\{\s*(disambiguation|disambig|dab|geodis|hndis)\b", re.IGNORECASE)


def dump_articles(xml_bytes: bytes, min_words: int) -> list[tuple[str, str, str]]:
    """``(page id, title, clean text)`` for each main-namespace, non-redirect, non-disambiguation
    article of a MediaWiki XML dump with at least ``min_words`` words of prose, in dump order."""
    articles = []
    for page_id, title, raw in _iter_wiki_pages(xml_bytes):
        if "(disambiguation)" in title or _DISAMBIGUATION.search(raw):
            continue
        text = clean_wikitext(raw)
        if len(text.split()) >= min_words:
            articles.append((page_id, title, text))
    return articles


def _iter_wiki_pages(xml_bytes: bytes) -> Iterable[tuple[str, str, str]]:
    """``(id, title, wikitext)`` of each main-namespace, non-redirect page of a MediaWiki XML dump."""
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


_HEADING = re.compile(r"^ = [^=].* = $")  # top-level WikiText title line, e.g. " = Robert Boulter = "


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
