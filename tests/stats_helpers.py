"""Goodness-of-fit helper for the distribution tests."""

import numpy as np
import scipy.stats


def chi2_pvalue(samples, probs, min_expected: float = 5.0) -> float:
    """Chi-square p-value of integer ``samples`` against the exact distribution ``probs``.

    A sample with probability zero fails outright; cells with expected count < ``min_expected`` are pooled.
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    probs = probs / probs.sum()
    counts = np.bincount(np.asarray(samples).ravel(), minlength=probs.size).astype(np.float64)
    assert counts[probs == 0].sum() == 0, "a token of probability zero was generated"
    expected = probs * counts.sum()
    big = expected >= min_expected
    obs = np.append(counts[big], counts[~big & (probs > 0)].sum())
    exp = np.append(expected[big], expected[~big & (probs > 0)].sum())
    keep = exp > 0
    return float(scipy.stats.chisquare(obs[keep], exp[keep]).pvalue)
