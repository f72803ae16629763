"""The comparison statistics, in one place: speedup as a ratio of means, the paired Wilcoxon test, Holm.

`ComparativeEvaluator`, the analysis tables and the bench format these results; none recomputes them.
Bootstrap intervals live in :mod:`entspec.metrics.aggregate` (``bootstrap_ci``, ``paired_bootstrap_ci``).
"""

from __future__ import annotations

from math import nan
from typing import Sequence

import numpy as np
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

__all__ = ["ratio_of_means", "paired_wilcoxon_test", "holm"]


def ratio_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spec-Bench's speedup: mean(x) / mean(y) (over ``axis``; vectorised for bootstrap resamples)."""
    return np.mean(x, axis=axis) / np.mean(y, axis=axis)


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
