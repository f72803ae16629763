"""Analysis of an experiment folder: per-generation table, Spec-Bench tables with bootstrap CIs, paired
tests, entropy-vs-acceptance, performance clustering, three figures and a markdown report.

Modules: ``load`` (folder -> per-generation table), ``stats`` (tables, paired tests, Holm), ``clustering``,
``plots``, ``report``, ``pipeline`` (:class:`AnalysisPipeline`), ``cli`` (``entspec analyze``).
Every metric comes from :mod:`entspec.metrics`. Documentation: ``docs/analysis.md``.
"""

from entspec.analysis.load import AnalysisError, Experiment, load_experiment, processed_frame
from entspec.analysis.pipeline import AnalysisPipeline, AnalysisResult

__all__ = ["AnalysisPipeline", "AnalysisResult", "AnalysisError", "Experiment", "load_experiment",
           "processed_frame", "register"]


def register(subparsers):
    """Add ``entspec analyze`` to an argparse subparsers object (see :mod:`entspec.analysis.cli`)."""
    from entspec.analysis.cli import register as _register

    return _register(subparsers)
