"""Evaluators: one method's traces (``SpeculativeDecodingEvaluator``) and a method against a baseline
(``ComparativeEvaluator``, Spec-Bench style).

Both read results in any form :func:`entspec.metrics.aggregate.load_rows` accepts (JSONL paths,
``ResultRow`` s or their JSON objects, ``GenerationResult`` objects) and pair rows by their columns
(:meth:`entspec.records.ResultRow.columns`: ``method``, ``prompt_id``, ``category``, ``seed``, ...).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from entspec.metrics.aggregate import Source, bootstrap_ci, load_rows, summarize
from entspec.metrics.compare import paired_speedup, paired_wilcoxon_test
from entspec.metrics.entropy_acceptance import EntropyAcceptance, entropy_acceptance
from entspec.metrics.generation import (
    GENERATION_METRIC_NAMES,
    accept_counts,
    draft_length_distribution,
    per_position_acceptance,
    pooled_metrics,
    stop_reason_counts,
)
from entspec.metrics.oracle import oracle_bound
from entspec.records import GenerationResult, ResultRow

__all__ = ["SpeculativeDecodingEvaluator", "ComparativeEvaluator"]


class SpeculativeDecodingEvaluator:
    """All metrics of one set of generations (typically one method; use ``by`` to split).

    >>> ev = SpeculativeDecodingEvaluator("runs/entropy.jsonl")
    >>> ev.summary()            # mean of each per-generation metric with a bootstrap CI
    >>> ev.oracle()["oracle_gap"]
    """

    def __init__(self, source: Source):
        self.rows = load_rows(source)

    @property
    def results(self) -> list[GenerationResult]:
        return [row.result for row in self.rows]

    def per_generation(self) -> pd.DataFrame:
        """One row per generation: row keys, ``config.*`` columns and :func:`generation_metrics`."""
        return summarize(self.rows)

    def summary(
        self,
        metrics: Sequence[str] = GENERATION_METRIC_NAMES,
        by: str | Sequence[str] | None = None,
        confidence: float = 0.95,
        n_resamples: int = 9999,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Mean over generations of each metric with a bootstrap CI (NaNs skipped).

        Columns: [by...], metric, n, mean, ci_low, ci_high, pooled. ``pooled`` is the metric of all
        generations pooled (:func:`pooled_metrics`: ratios of sums, e.g. Σ accepted / Σ drafted), which
        weights long generations more than the mean of per-generation values does.
        """
        table = self.per_generation()
        by = [by] if isinstance(by, str) else list(by or [])
        groups = table.groupby(by, sort=True) if by else [((), table)]
        out = []
        for group_key, part in groups:
            group_key = group_key if isinstance(group_key, tuple) else (group_key,)
            pooled = pooled_metrics([self.rows[i].result for i in part.index])
            for name in metrics:
                values = part[name].to_numpy(dtype=float)
                finite = values[~np.isnan(values)]
                low, high = bootstrap_ci(finite, confidence=confidence, n_resamples=n_resamples, seed=seed)
                out.append({
                    **dict(zip(by, group_key)),
                    "metric": name,
                    "n": int(finite.size),
                    "mean": float(finite.mean()) if finite.size else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "pooled": float(pooled[name]),
                })
        return pd.DataFrame(out)

    def entropy_acceptance(self, bins: int | list[float] = 10, binning: str = "quantile",
                           confidence: float = 0.95) -> EntropyAcceptance:
        """Token table, Spearman / AUROC per entropy type and acceptance per entropy bin."""
        return entropy_acceptance(self.results, bins=bins, binning=binning, confidence=confidence)

    def oracle(self, draft_step_s: float | None = None, verify_call_s: float | None = None,
               **kwargs: Any) -> dict[str, float | int]:
        """DISCO oracle bound of these generations (see :func:`entspec.metrics.oracle.oracle_bound`)."""
        return oracle_bound(self.results, draft_step_s=draft_step_s, verify_call_s=verify_call_s, **kwargs)

    def per_position_acceptance(self) -> list[float]:
        return per_position_acceptance(self.results)

    def draft_length_distribution(self):
        return draft_length_distribution(self.results)

    def stop_reason_counts(self):
        return stop_reason_counts(self.results)

    def accept_counts(self) -> list[int]:
        return accept_counts(self.results)


class ComparativeEvaluator:
    """A method against a baseline on the same prompts (Spec-Bench).

    Rows are paired on ``key`` (default ``prompt_id``) plus ``seed`` when both sides carry it. Repeated
    rows of a pair (several runs) are averaged first. ``category`` is taken from the method's rows.

    * per-prompt speedup = metric / baseline metric (tokens/s by default);
    * overall speedup = mean(metric) / mean(baseline metric) over pairs (Spec-Bench), with a paired
      bootstrap CI that resamples prompts;
    * paired Wilcoxon signed-rank test of metric vs baseline metric (two-sided);
    * ``output_match_rate``: share of pairs whose new tokens are identical (greedy speculative decoding
      must reproduce autoregressive output exactly); NaN when a pair has repeated runs.
    """

    def __init__(self, method_rows: Source, baseline_rows: Source, key: str = "prompt_id",
                 metric: str = "tokens_per_s"):
        self.method_rows = load_rows(method_rows)
        self.baseline_rows = load_rows(baseline_rows)
        self.key = key
        self.metric = metric
        method_keys = set().union(*(r.columns() for r in self.method_rows)) if self.method_rows else set()
        base_keys = set().union(*(r.columns() for r in self.baseline_rows)) if self.baseline_rows else set()
        if key not in method_keys or key not in base_keys:
            raise ValueError(f"key: both sides need the pairing key {key!r} in their rows")
        self.pair_keys = [key] + (["seed"] if "seed" in method_keys and "seed" in base_keys else [])

    def _side(self, rows: list[ResultRow]) -> pd.DataFrame:
        table = summarize(rows)
        table["tokens"] = [tuple(r.result.new_tokens) for r in rows]
        agg = {self.metric: "mean", "tokens": lambda s: s.iloc[0] if len(s) == 1 else None}
        if "category" in table:
            agg["category"] = "first"
        return table.groupby(self.pair_keys, sort=True).agg(agg).reset_index()

    def per_prompt(self) -> pd.DataFrame:
        """One row per pair: keys, [category], metric, baseline_<metric>, speedup, outputs_match."""
        method = self._side(self.method_rows)
        base = self._side(self.baseline_rows).drop(columns=["category"], errors="ignore")
        pairs = method.merge(base, on=self.pair_keys, suffixes=("", "_baseline"), how="inner")
        pairs = pairs.rename(columns={f"{self.metric}_baseline": f"baseline_{self.metric}"})
        pairs["speedup"] = pairs[self.metric] / pairs[f"baseline_{self.metric}"]
        pairs["outputs_match"] = [
            (a == b) if a is not None and b is not None else None
            for a, b in zip(pairs["tokens"], pairs["tokens_baseline"])
        ]
        return pairs.drop(columns=["tokens", "tokens_baseline"])

    def _compare(self, pairs: pd.DataFrame, confidence: float, n_resamples: int, seed: int) -> dict:
        x = pairs[self.metric].to_numpy(dtype=float)
        y = pairs[f"baseline_{self.metric}"].to_numpy(dtype=float)
        speedup = paired_speedup(x, y, confidence, n_resamples, seed)
        stat, p = paired_wilcoxon_test(x, y)
        match = pairs["outputs_match"]
        return {
            "n_pairs": int(len(pairs)),
            f"mean_{self.metric}": float(x.mean()) if x.size else math.nan,
            f"mean_baseline_{self.metric}": float(y.mean()) if y.size else math.nan,
            "speedup": speedup["speedup"],
            "speedup_ci_low": speedup["speedup_ci_low"],
            "speedup_ci_high": speedup["speedup_ci_high"],
            "mean_per_prompt_speedup": float(np.mean(x / y)) if x.size else math.nan,
            "geomean_per_prompt_speedup": float(np.exp(np.mean(np.log(x / y)))) if x.size else math.nan,
            "wilcoxon_statistic": stat,
            "wilcoxon_p": p,
            "output_match_rate": float(match.astype(float).mean()) if match.notna().all() and len(match)
            else math.nan,
        }

    def speedup(self, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
        """Overall comparison over all pairs (see class docstring for each field)."""
        return self._compare(self.per_prompt(), confidence, n_resamples, seed)

    def summary(self, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
        """The :meth:`speedup` fields for ``category="all"`` and, when rows carry one, each category."""
        pairs = self.per_prompt()
        out = [{"category": "all", **self._compare(pairs, confidence, n_resamples, seed)}]
        if "category" in pairs:
            for category, part in pairs.groupby("category", sort=True):
                out.append({"category": category, **self._compare(part, confidence, n_resamples, seed)})
        return pd.DataFrame(out)
