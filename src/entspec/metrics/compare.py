"""The paired comparison, in one place: speedup as a ratio of means with its paired bootstrap interval
(`paired_speedup`), the paired Wilcoxon test, Holm, and the one formatter of their numbers.

`ComparativeEvaluator`, the analysis tables, the bench and tune reports use these; none recomputes or reformats
them. Bootstrap intervals live in :mod:`entspec.metrics.aggregate` (``bootstrap_ci``, ``paired_bootstrap_ci``).
"""

from __future__ import annotations

import math
from math import nan
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from .aggregate import paired_bootstrap_ci

__all__ = ["ratio_of_means", "paired_speedup", "paired_wilcoxon_test", "holm", "finite", "fmt", "fmt_ci", "fmt_p",
           "markdown_table", "NA"]
NA = "n/a"


def ratio_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spec-Bench's speedup: mean(x) / mean(y) (over ``axis``; vectorised for bootstrap resamples)."""
    return np.mean(x, axis=axis) / np.mean(y, axis=axis)


def paired_speedup(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                   seed: int = 0) -> dict[str, float]:
    """Spec-Bench's speedup of ``x`` over ``y`` (paired: the same prompts or batches), mean(x) / mean(y), with a
    paired bootstrap interval; pairs with a NaN are dropped. Keys: speedup, speedup_ci_low, speedup_ci_high, n_pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    low, high = paired_bootstrap_ci((x, y), ratio_of_means, confidence, n_resamples, seed)
    return {"speedup": float(ratio_of_means(x[ok], y[ok])) if ok.any() else nan, "speedup_ci_low": low,
            "speedup_ci_high": high, "n_pairs": int(ok.sum())}


def paired_wilcoxon_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided paired Wilcoxon signed-rank test (statistic, p); NaN with < 2 pairs or no difference."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.all(x == y):
        return nan, nan
    try:
        res = wilcoxon(x, y)
    except ValueError:
        return nan, nan
    return float(res.statistic), float(res.pvalue)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and rejections (``multipletests``); NaN p-values stay NaN / not rejected."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, nan)
    reject = np.zeros(p.shape, dtype=bool)
    ok = ~np.isnan(p)
    if ok.any():
        reject[ok], adjusted[ok], _, _ = multipletests(p[ok], alpha=alpha, method="holm")
    return adjusted, reject


# --- the one formatter ---------------------------------------------------------------------------------------


def finite(value: Any) -> bool:
    """A number that is not NaN or infinite."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` when it is missing or not finite."""
    return f"{float(value):.{digits}f}" if finite(value) else NA


def fmt_ci(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``1.234 [1.100, 1.350]``; the value alone when the interval is undefined; ``n/a`` without a value."""
    if not finite(value):
        return NA
    if finite(low) and finite(high):
        return f"{float(value):.{digits}f} [{float(low):.{digits}f}, {float(high):.{digits}f}]"
    return fmt(value, digits)


def fmt_p(p: Any) -> str:
    if not finite(p):
        return NA
    return f"{float(p):.2e}" if float(p) < 1e-3 else f"{float(p):.4f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are str()-ed and pipes escaped."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
