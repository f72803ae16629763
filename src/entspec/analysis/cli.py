"""``entspec analyze EXPERIMENT_DIR [--out DIR]``.

Wire-up: ``entspec.analysis.cli.register(subparsers)`` adds the ``analyze`` command to an argparse
subparsers object; the parsed args carry ``func=main_analyze``.
"""

from __future__ import annotations

import argparse
import sys

from entspec.analysis.load import AnalysisError
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
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval")
    parser.set_defaults(func=main_analyze)
    return parser


def main_analyze(args: argparse.Namespace) -> int:
    """Run the analysis and print the summary table and the paths; exit code 1 on an unusable folder."""
    try:
        result = AnalysisPipeline(args.experiment_dir, args.out, baseline=args.baseline, hf_default=args.hf_default,
                                  n_resamples=args.resamples).run_full_analysis()
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.summary_markdown)
    print(f"\nreport: {result.report}")
    for name, path in result.figures.items():
        print(f"figure ({name}): {path}")
    print(f"per-generation data: {result.processed_data}  ({result.seconds:.1f} s)")
    return 0
