"""Regenerate the **Targets** blocks of a benchmarks page from the speedup tables printed above them.

For sections whose run folders are gone (older runs: the page keeps their tables, not their rows), this runs
the current `entspec.bench.report.targets` on exactly the numbers the page shows, so every Targets line on
the page comes from one piece of code. A method's rule is the name before ``[`` in its id, the form every
bench table uses (``svip[max_draft_len=20]``); a run folder, where there is one, is the better source
(`entspec bench` writes its Targets from the typed rows).

    .venv/bin/python scripts/regenerate_targets.py docs/benchmarks.md          # prints what would change
    .venv/bin/python scripts/regenerate_targets.py docs/benchmarks.md --write
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from entspec.bench.report import targets

_CATEGORY = re.compile(r"^\*\*([\w\-]+)\*\* \(\d+ prompts")


def speed_tables(lines: list[str], start: int, end: int) -> pd.DataFrame:
    """The (method, strategy, category, speedup) rows of the speedup tables in lines[start:end]."""
    rows, category, column = [], None, None
    for line in lines[start:end]:
        if m := _CATEGORY.match(line):
            category, column = m.group(1), None
        elif line.startswith("| method") and category:
            heads = [c.strip() for c in line.strip("|").split("|")]
            column = next((k for k, h in enumerate(heads) if h.startswith("speedup")), None)
        elif line.startswith("| ") and category and column is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            method = cells[0]
            rows.append({"method": method, "strategy": method.split("[")[0], "category": category,
                         "speedup": float(cells[column].split()[0])})
        elif line.strip() and not line.startswith("|"):
            category, column = None, None
    return pd.DataFrame(rows)


def _named(block: list[str]) -> dict[str, str]:
    """The best rule a Targets block names, per category."""
    return {line[2:].split(":")[0]: m.group(1) for line in block
            if (m := re.search(r"best (?:entropy )?rule (\S+)", line))}


def regenerate(text: str) -> str:
    lines = text.splitlines()
    out, last_block_end = [], 0
    i = 0
    while i < len(lines):
        if lines[i].startswith("**Targets**"):
            j = i + 2
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            speed = speed_tables(lines, last_block_end, i)
            fresh = targets(speed) if len(speed) and {"autoregressive", "hf_assisted[default]"} <= set(speed.method) \
                else lines[i:j]
            # A block whose named rules are right keeps its lines: `entspec bench` wrote them from unrounded rows.
            out += fresh if _named(fresh) != _named(lines[i:j]) else lines[i:j]
            last_block_end, i = j, j
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--write", action="store_true", help="rewrite the page in place")
    args = parser.parse_args()
    old = args.page.read_text()
    new = regenerate(old)
    import difflib

    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0))
    print("\n".join(diff))
    print(f"{sum(1 for d in diff if d.startswith('+') and not d.startswith('+++'))} lines regenerated")
    if args.write and new != old:
        args.page.write_text(new)


if __name__ == "__main__":
    main()
