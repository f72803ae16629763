"""`entspec rules`: the registered stopping rules, what each reads, its main knob, parameters and tune sweep."""

from __future__ import annotations

import argparse
import dataclasses

from .base import RULES, RuleInfo


def describe(info: RuleInfo) -> str:
    """One rule in a few lines: name and family, reads, threshold, parameters with defaults, the sweep."""
    family = info.cls.__module__.rpartition(".")[2]
    lines = [f"{info.name}  ({info.cls.__name__}, {'experimental' if family == 'goodput' else family})",
             f"  reads:     {', '.join(sorted(info.reads)) or 'nothing (decides from the draft length and feedback)'}",
             f"  threshold: {info.threshold or '-'}"]
    if info.params is not None:
        defaults = ", ".join(f"{f.name}={f.default if f.default is not dataclasses.MISSING else f.default_factory()}"
                             for f in dataclasses.fields(info.params))
        lines.append(f"  params:    {defaults}")
    if info.sweep:
        lines.append("  tune grid: " + "; ".join(f"{k} in {list(v)}" for k, v in info.sweep.items()))
    return "\n".join(lines)


def cmd_rules(args: argparse.Namespace) -> int:
    names = args.names or list(RULES)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"strategy: unknown rule {unknown[0]!r} (registered: {', '.join(RULES)})")
    print("\n\n".join(describe(RULES[n]) for n in names))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    rules = subparsers.add_parser("rules", help="list the registered stopping rules and their parameters")
    rules.add_argument("names", nargs="*", help="only these rules (default: all)")
    rules.set_defaults(func=cmd_rules)
