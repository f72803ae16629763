"""``entspec analyze EXPERIMENT_DIR [--out DIR]``.

Wire-up: ``entspec.analysis.cli.register(subparsers)`` adds the ``analyze`` command to an argparse
subparsers object; the parsed args carry ``func=main_analyze``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from entspec.analysis.pipeline import AnalysisPipeline


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``analyze`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser("analyze", help="tables, figures and a report from an experiment folder")
    parser.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="folder with configs/ and results/")
    parser.add_argument("--out", default=None, help="output folder (default: EXPERIMENT_DIR/plots)")
    parser.add_argument("--baseline", default=None,
                        help="method_kind or method of the speedup baseline "
                             "(default: hf_generate, else autoregressive)")
    parser.add_argument("--hf-default", default=None, help="method id of HF assisted generation with its defaults")
    parser.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples per interval")
    parser.add_argument("--skip-damaged", action="store_true",
                        help="skip (and count) damaged rows of results.jsonl instead of refusing the folder")
    parser.add_argument("--while-running", action="store_true",
                        help="analyze the rows so far even though a run is still writing the folder")
    parser.set_defaults(func=main_analyze)
    return parser


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports the flag: "argument --resamples: ...")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {value})")
    return value


def _refuse_a_running_experiment(folder: Path) -> None:
    """A run still holding the folder: say so and how far it is, instead of analyzing a partial set silently."""
    from entspec.lock import lock_holder

    holder = lock_holder(folder)
    if holder is None:
        return
    progress = folder / "checkpoints" / "progress.json"
    try:
        state = json.loads(progress.read_text())
        done = f"{state['done']} of {state['total']} units done"
    except (OSError, ValueError, KeyError, TypeError):
        done = "progress unknown"
    raise ValueError(f"{folder}: a run is in progress ({holder}; {done}); analyze it when it finishes, or pass "
                     "--while-running to analyze the rows so far")


def main_analyze(args: argparse.Namespace) -> int:
    """Run the analysis and print the summary table and the paths.

    An unusable folder raises :class:`AnalysisError` (a ValueError): ``entspec`` prints it as one
    ``entspec analyze: error: ...`` line and exits 2, like every other subcommand.
    """
    if not args.while_running:
        _refuse_a_running_experiment(Path(args.experiment_dir))
    result = AnalysisPipeline(args.experiment_dir, args.out, baseline=args.baseline, hf_default=args.hf_default,
                              n_resamples=args.resamples, skip_damaged=args.skip_damaged).run_full_analysis()
    print(result.summary_markdown)
    print(f"\nreport: {result.report}")
    for name, path in result.figures.items():
        print(f"figure ({name}): {path}")
    print(f"per-generation data: {result.processed_data}  ({result.seconds:.1f} s)")
    return 0
