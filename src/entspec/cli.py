"""The `entspec` command: run, analyze, bench, demo, generate, models."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .experiment import cli as experiment_cli
    from .models import cli as models_cli
    from .engine import cli as generate_cli

    parser = argparse.ArgumentParser(prog="entspec", description="Entropy-based speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    experiment_cli.register(sub)
    try:
        from .analysis import cli as analysis_cli

        analysis_cli.register(sub)
    except ImportError:  # pragma: no cover - analysis is optional only while it is being built
        pass
    try:
        from .bench import cli as bench_cli

        bench_cli.register(sub)
    except ImportError:  # pragma: no cover
        pass
    generate_cli.register(sub)
    from .replay import cli as replay_cli

    replay_cli.register(sub)
    models_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # transformers' deprecation chatter would bury the progress bars
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished results are on disk; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        # Bad input gets one line naming the field or file (ConfigError, DatasetError, ... are ValueErrors).
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"entspec {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
