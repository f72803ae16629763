"""Loading rows, per-generation tables and bootstrap confidence intervals.

**Rows.** A results row is an :class:`entspec.records.ResultRow`: method identity (``method``, the
method id, e.g. "fixed[max_draft_len=4]"; ``method_kind``; ``strategy``; ``params``), ``prompt_id``,
``category`` (the Spec-Bench task), ``seed``, the run's ``config`` and the ``result`` (a
``GenerationResult``). Its table columns are :meth:`ResultRow.columns`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from entspec.metrics.generation import generation_metrics
from entspec.records import GenerationResult, ResultRow, read_rows

__all__ = ["load_rows", "summarize", "bootstrap_ci", "paired_bootstrap_ci"]

Row = Union[str, Path, GenerationResult, ResultRow, dict]
Source = Union[Row, Iterable[Row]]


def load_rows(source: Source) -> list[ResultRow]:
    """Results in any form as :class:`ResultRow` s.

    ``source`` may be a JSONL path, a ``ResultRow``, a row's JSON object (any schema version), a
    ``GenerationResult`` (:meth:`ResultRow.from_result`), or an iterable mixing them.
    """
    if isinstance(source, (str, Path, GenerationResult, ResultRow, dict)):
        source = [source]
    rows: list[ResultRow] = []
    for item in source:
        if isinstance(item, (str, Path)):
            rows.extend(read_rows(item))
        elif isinstance(item, ResultRow):
            rows.append(item)
        elif isinstance(item, GenerationResult):
            rows.append(ResultRow.from_result(item))
        elif isinstance(item, dict):
            rows.append(ResultRow.from_json(item))
        else:
            raise TypeError(f"cannot read results from {type(item).__name__}")
    return rows


def summarize(rows: Source) -> pd.DataFrame:
    """One row per generation: the row's columns (:meth:`ResultRow.columns`), ``config.<name>`` columns,
    ``decoding`` (result.method), ``finish_reason``, ``prompt_len`` and every :func:`generation_metrics` value."""
    records = []
    for row in load_rows(rows):
        res = row.result
        config = pd.json_normalize(row.config, sep=".").iloc[0].to_dict() if row.config else {}
        records.append({
            **row.columns(),
            **{f"config.{k}": v for k, v in config.items()},
            "decoding": res.method,
            "finish_reason": res.finish_reason,
            "prompt_len": res.prompt_len,
            **generation_metrics(res),
        })
    return pd.DataFrame(records)


def _clean(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[~np.isnan(arr)]


def _run_bootstrap(data: tuple, statistic: Callable, confidence: float, n_resamples: int, seed: int,
                   method: str, paired: bool) -> tuple[float, float]:
    kwargs = dict(confidence_level=confidence, n_resamples=n_resamples, paired=paired,
                  random_state=np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate BCa; we fall back below
        ci = bootstrap(data, statistic, method=method, **kwargs).confidence_interval
        if method.lower() == "bca" and not (np.isfinite(ci.low) and np.isfinite(ci.high)):
            ci = bootstrap(data, statistic, method="percentile", **kwargs).confidence_interval
    return float(ci.low), float(ci.high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """(low, high) bootstrap interval of ``statistic(values)`` via ``scipy.stats.bootstrap``.

    NaNs are dropped. Degenerate samples do not crash: no values -> (NaN, NaN); one value or a constant
    sample -> (v, v) with v = statistic(values). BCa falls back to percentile when it is undefined.
    ``statistic`` should accept ``axis`` (numpy reductions do) to be vectorised.
    """
    arr = _clean(values)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size < 2 or np.ptp(arr) == 0:
        v = float(statistic(arr))
        return v, v
    return _run_bootstrap((arr,), statistic, confidence, n_resamples, seed, method, paired=False)


def paired_bootstrap_ci(
    samples: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[..., Any],
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Bootstrap interval of ``statistic(*samples, axis=-1)`` resampling *pairs* (the same indices in
    every sample), e.g. the Spec-Bench speedup mean(x)/mean(y) over paired prompts.

    Pairs with a NaN in any sample are dropped; fewer than 2 pairs or a statistic that is constant under
    resampling (all samples constant) give (v, v).
    """
    arrays = [np.asarray(s, dtype=float).ravel() for s in samples]
    if len({a.size for a in arrays}) != 1:
        raise ValueError("paired samples must have equal length")
    ok = np.all([~np.isnan(a) for a in arrays], axis=0) if arrays[0].size else np.zeros(0, dtype=bool)
    arrays = [a[ok] for a in arrays]
    if arrays[0].size == 0:
        return float("nan"), float("nan")
    if arrays[0].size < 2 or all(np.ptp(a) == 0 for a in arrays):
        v = float(statistic(*arrays, axis=-1))
        return v, v
    return _run_bootstrap(tuple(arrays), statistic, confidence, n_resamples, seed, method, paired=True)
