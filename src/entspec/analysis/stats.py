"""Per-method tables with bootstrap intervals, paired Wilcoxon tests and Holm correction.

**Units.** Prompts are the independent units: seeds of one prompt are averaged first, then every
interval resamples prompts. A metric's table value is the mean over prompts of the per-prompt mean;
the speedup is Spec-Bench's mean(tokens/s) / mean(baseline tokens/s) over the prompts of a category,
with a paired bootstrap interval (:func:`entspec.metrics.paired_bootstrap_ci`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from entspec.metrics import bootstrap_ci, paired_bootstrap_ci
from entspec.metrics.compare import holm, paired_wilcoxon_test, ratio_of_means

__all__ = ["per_prompt", "method_table", "paired_wilcoxon", "holm", "paired_tests", "TABLE_METRICS"]

# (column in processed_data, name in the tables) of the metrics reported with a CI besides the speedup
TABLE_METRICS = (
    ("tokens_per_s", "tokens_per_s"),
    ("mean_accepted_tokens", "mean_accepted_tokens"),
    ("acceptance_rate", "acceptance_rate"),
    ("mean_draft_length", "mean_draft_length"),
    ("oracle_gap", "oracle_gap"),
    ("true_oracle_share", "true_oracle_share"),
)


def per_prompt(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean of ``columns`` per (method, category, prompt_id) over seeds. Columns keep their names."""
    keys = ["method", "category", "prompt_id"]
    return frame.groupby(keys, sort=True)[list(columns)].mean().reset_index()


def method_table(frame: pd.DataFrame, by_category: bool = True, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (category, method): n_prompts, n_generations, speedup with CI and each of
    :data:`TABLE_METRICS` as mean with CI (NaNs skipped). ``category == "all"`` pools every prompt.

    Columns: category, method, method_kind, strategy, is_baseline, n_prompts, n_generations, speedup, speedup_ci_low,
    speedup_ci_high, and <metric>, <metric>_ci_low, <metric>_ci_high for each metric.
    """
    metrics = [m for m, _ in TABLE_METRICS]
    prompts = per_prompt(frame, metrics + ["baseline_tokens_per_s"])
    info_columns = ["method_kind", "strategy"] + (["is_baseline"] if "is_baseline" in frame else [])
    info = frame.groupby("method", sort=False)[info_columns].first()
    counts = frame.groupby(["method", "category"]).size()
    groups = [("all", prompts)]
    if by_category:
        groups += [(c, part) for c, part in prompts.groupby("category", sort=True)]
    out = []
    for category, part in groups:
        for method, rows in part.groupby("method", sort=False):
            x = rows["tokens_per_s"].to_numpy(float)
            y = rows["baseline_tokens_per_s"].to_numpy(float)
            ok = ~(np.isnan(x) | np.isnan(y))
            speedup = float(ratio_of_means(x[ok], y[ok])) if ok.any() else math.nan
            low, high = paired_bootstrap_ci((x, y), ratio_of_means, confidence, n_resamples, seed)
            n_gen = int(counts[method].sum()) if category == "all" else int(counts[method].get(category, 0))
            record = {"category": category, "method": method, "method_kind": info.loc[method, "method_kind"],
                      "strategy": info.loc[method, "strategy"],
                      "is_baseline": bool(info.loc[method].get("is_baseline", False)), "n_prompts": int(len(rows)),
                      "n_generations": n_gen, "speedup": speedup, "speedup_ci_low": low,
                      "speedup_ci_high": high}
            for metric in metrics:
                values = rows[metric].to_numpy(float)
                values = values[~np.isnan(values)]
                record[metric] = float(values.mean()) if values.size else math.nan
                record[f"{metric}_ci_low"], record[f"{metric}_ci_high"] = bootstrap_ci(
                    values, confidence=confidence, n_resamples=n_resamples, seed=seed)
            out.append(record)
    return pd.DataFrame(out)


def paired_wilcoxon(frame: pd.DataFrame, method: str, other: str, metric: str = "tokens_per_s") -> dict:
    """Two-sided Wilcoxon signed-rank test of ``metric`` of ``method`` vs ``other``, paired per prompt.

    Returns n_pairs, mean of each side, ratio (mean / mean other), median of the per-prompt difference,
    statistic and p (NaN with fewer than 2 pairs or all differences zero).
    """
    prompts = per_prompt(frame[frame["method"].isin([method, other])], [metric])
    wide = prompts.pivot_table(index="prompt_id", columns="method", values=metric).dropna()
    if method not in wide or other not in wide:
        wide = pd.DataFrame(columns=[method, other], dtype=float)
    x, y = wide[method].to_numpy(float), wide[other].to_numpy(float)
    stat, p = paired_wilcoxon_test(x, y)
    return {
        "n_pairs": int(x.size),
        "mean": float(x.mean()) if x.size else math.nan,
        "mean_other": float(y.mean()) if y.size else math.nan,
        "ratio": float(ratio_of_means(x, y)) if x.size else math.nan,
        "median_difference": float(np.median(x - y)) if x.size else math.nan,
        "statistic": stat,
        "p": p,
    }


def paired_tests(frame: pd.DataFrame, methods: Sequence[str], references: dict[str, str],
                 metric: str = "tokens_per_s", alpha: float = 0.05) -> pd.DataFrame:
    """Each of ``methods`` against each reference ({label: method}), Holm-corrected over the whole grid.

    Columns: method, reference (label), reference_method, the :func:`paired_wilcoxon` fields, p_holm,
    significant (Holm-adjusted p < alpha).
    """
    out = []
    for method in methods:
        for label, reference in references.items():
            if reference == method:
                continue
            out.append({"method": method, "reference": label, "reference_method": reference,
                        **paired_wilcoxon(frame, method, reference, metric)})
    table = pd.DataFrame(out, columns=["method", "reference", "reference_method", "n_pairs", "mean",
                                       "mean_other", "ratio", "median_difference", "statistic", "p"])
    table["p_holm"], table["significant"] = holm(table["p"].to_numpy(float), alpha) if len(table) else ([], [])
    return table
