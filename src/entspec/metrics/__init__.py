"""Metrics of speculative decoding, derived from the raw round records of :mod:`entspec.records`.

Modules: ``generation`` (per-generation numbers), ``entropy_acceptance`` (does entropy predict
rejection?), ``oracle`` (DISCO oracle bound), ``theory`` (Leviathan closed forms), ``aggregate``
(rows, tables, bootstrap CIs), ``evaluators`` (one method; a method against a baseline).
Definitions: ``docs/metrics.md``.
"""

from entspec.metrics.aggregate import bootstrap_ci, load_rows, paired_bootstrap_ci, summarize
from entspec.metrics.entropy_acceptance import (
    EntropyAcceptance,
    acceptance_by_bin,
    entropy_acceptance,
    entropy_acceptance_stats,
    token_table,
)
from entspec.metrics.evaluators import ComparativeEvaluator, SpeculativeDecodingEvaluator
from entspec.metrics.generation import (
    GENERATION_METRIC_NAMES,
    accept_counts,
    draft_length_distribution,
    generation_metrics,
    per_position_acceptance,
    pooled_metrics,
    stop_reason_counts,
)
from entspec.metrics.oracle import expected_accepted, oracle_bound, oracle_draft_length
from entspec.metrics.theory import (
    acceptance_from_distributions,
    expected_speedup,
    expected_tokens_per_call,
    optimal_gamma,
)

__all__ = [
    "SpeculativeDecodingEvaluator",
    "ComparativeEvaluator",
    "generation_metrics",
    "pooled_metrics",
    "GENERATION_METRIC_NAMES",
    "per_position_acceptance",
    "draft_length_distribution",
    "stop_reason_counts",
    "accept_counts",
    "token_table",
    "entropy_acceptance",
    "entropy_acceptance_stats",
    "acceptance_by_bin",
    "EntropyAcceptance",
    "oracle_bound",
    "oracle_draft_length",
    "expected_accepted",
    "expected_tokens_per_call",
    "expected_speedup",
    "optimal_gamma",
    "acceptance_from_distributions",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "summarize",
    "load_rows",
]
