"""The `entspec` command: run, demo, analyze, bench, generate, rules, trace, tune, models."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand lives in its subpackage's ``cli`` module and registers itself here."""
    from .analysis import cli as analysis_cli
    from .bench import cli as bench_cli
    from .engine import cli as engine_cli
    from .experiment import cli as experiment_cli
    from .models import cli as models_cli
    from .replay import cli as replay_cli
    from .rules import cli as rules_cli

    parser = argparse.ArgumentParser(prog="entspec", description="Entropy-based speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (experiment_cli, analysis_cli, bench_cli, engine_cli, rules_cli, replay_cli, models_cli):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    from .models.registry import UnknownName

    hf_logging.set_verbosity_error()  # transformers' deprecation chatter would bury the progress bars
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished results are on disk; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, UnknownName, FileNotFoundError, OSError) as err:
        # Bad input gets one line naming the field or file (ConfigError, DatasetError, ... are ValueErrors; a name
        # the model registry lacks is an UnknownName). Any other exception is a bug: its traceback is shown.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"entspec {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
