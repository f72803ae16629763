"""Does the drafter's entropy predict the verifier's verdict? Token-level table and its statistics.

The table has one row per drafted token the verifier judged *in sequence*: in a round that drafted d
tokens and accepted a of them, positions i = 0 .. min(a + 1, d) − 1 (the accepted ones and the first
rejected one). Later positions were scored in the same verifier forward, but on a draft prefix the
verifier had already rejected, so they are not the verdict the rule would meet and are left out.

Statistics per entropy type H (higher entropy should mean more rejections):

* ``spearman_rho``, ``spearman_p``: Spearman rank correlation of H with ``accepted`` (0/1); expected < 0.
* ``auroc_rejection``: AUROC of H as a score for *rejection* (``roc_auc_score(~accepted, H)``):
  1.0 = every rejected token had higher entropy than every accepted one, 0.5 = no signal; NaN when all
  tokens were accepted or all rejected.
* ``spearman_rho_accept_prob``: Spearman of H with ``accept_prob`` = min(1, p/q), the acceptance
  probability behind the coin (less noisy than the 0/1 outcome in sampling mode).
* :func:`acceptance_by_bin`: acceptance rate per entropy bin with a Wilson (or other statsmodels
  ``proportion_confint``) interval.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from entspec.records import GenerationResult

__all__ = [
    "token_table",
    "entropy_acceptance_stats",
    "acceptance_by_bin",
    "entropy_columns",
    "EntropyAcceptance",
    "entropy_acceptance",
]

ENTROPY_PREFIX = "entropy_"


def token_table(results: GenerationResult | Iterable[GenerationResult]) -> pd.DataFrame:
    """One row per drafted token judged in sequence (module docstring).

    Columns: ``generation`` (index of the result), ``round``, ``position`` (0-based in the draft),
    ``drafted`` (the round's draft length), ``entropy`` (the configured type, ``RoundRecord.entropies``),
    ``entropy_<type>`` for each key of ``entropies_by_type``, ``draft_prob`` (q(x_i)), ``accept_prob``
    (min(1, p/q)), ``threshold`` and ``accepted`` (bool). Missing per-token lists give NaN.
    """
    results = [results] if isinstance(results, GenerationResult) else list(results)
    rows: list[dict] = []
    for g, res in enumerate(results):
        for k, rnd in enumerate(res.rounds):
            judged = min(rnd.accepted + 1, rnd.drafted)
            for i in range(judged):
                row = {
                    "generation": g,
                    "round": k,
                    "position": i,
                    "drafted": rnd.drafted,
                    "entropy": _at(rnd.entropies, i),
                    "draft_prob": _at(rnd.draft_token_probs, i),
                    "accept_prob": _at(rnd.accept_probs, i),
                    "threshold": math.nan if rnd.threshold is None else float(rnd.threshold),
                    "accepted": i < rnd.accepted,
                }
                for name, values in rnd.entropies_by_type.items():
                    row[ENTROPY_PREFIX + name] = _at(values, i)
                rows.append(row)
    columns = ["generation", "round", "position", "drafted", "entropy", "draft_prob", "accept_prob",
               "threshold", "accepted"]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "accepted" else float) for c in columns})
    return pd.DataFrame(rows)


def _at(values: list[float], i: int) -> float:
    return float(values[i]) if i < len(values) and values[i] is not None else math.nan


def entropy_columns(table: pd.DataFrame) -> list[str]:
    """Entropy columns of a token table: ``entropy`` then every ``entropy_<type>``."""
    return [c for c in table.columns if c == "entropy" or c.startswith(ENTROPY_PREFIX)]


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman rho and p; NaN for fewer than 3 points or a constant input (instead of a warning)."""
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def entropy_acceptance_stats(table: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Per entropy column: n, n_rejected, Spearman with acceptance and with accept_prob, AUROC of rejection.

    Index: entropy column name. Degenerate inputs (no tokens, all accepted, constant entropy) give NaN.
    """
    columns = entropy_columns(table) if columns is None else columns
    accepted = table["accepted"].to_numpy(dtype=bool) if len(table) else np.zeros(0, dtype=bool)
    accept_prob = table["accept_prob"].to_numpy(dtype=float) if len(table) else np.zeros(0)
    out = []
    for col in columns:
        h = table[col].to_numpy(dtype=float)
        ok = ~np.isnan(h)
        rejected = ~accepted[ok]
        rho, p = _spearman(h, accepted.astype(float))
        rho_ap, p_ap = _spearman(h, accept_prob)
        both_classes = 0 < rejected.sum() < rejected.size
        out.append({
            "entropy_type": col,
            "n": int(ok.sum()),
            "n_rejected": int(rejected.sum()),
            "acceptance_rate": float(np.mean(~rejected)) if rejected.size else math.nan,
            "spearman_rho": rho,
            "spearman_p": p,
            "auroc_rejection": float(roc_auc_score(rejected, h[ok])) if both_classes else math.nan,
            "spearman_rho_accept_prob": rho_ap,
            "spearman_p_accept_prob": p_ap,
        })
    return pd.DataFrame(out).set_index("entropy_type") if out else pd.DataFrame()


def acceptance_by_bin(
    table: pd.DataFrame,
    column: str = "entropy",
    bins: int | list[float] = 10,
    binning: Literal["quantile", "fixed"] = "quantile",
    confidence: float = 0.95,
    ci_method: str = "wilson",
) -> pd.DataFrame:
    """Acceptance rate of tokens grouped by entropy bin, with a binomial confidence interval.

    ``binning="quantile"`` cuts at quantiles (``pd.qcut``; ties may merge bins), ``"fixed"`` at equal
    widths or at the given edges (``pd.cut``). Columns: bin, n, accepted, acceptance_rate, ci_low,
    ci_high, entropy_mean. ``ci_method`` is any ``statsmodels proportion_confint`` method.
    """
    data = table[[column, "accepted"]].dropna(subset=[column])
    if data.empty:
        return pd.DataFrame(columns=["bin", "n", "accepted", "acceptance_rate", "ci_low", "ci_high",
                                     "entropy_mean"])
    h = data[column].astype(float)
    if binning == "quantile" and isinstance(bins, int):
        cut = pd.qcut(h, q=bins, duplicates="drop") if h.nunique() > 1 else pd.cut(h, bins=1)
    else:
        cut = pd.cut(h, bins=bins, include_lowest=True)
    grouped = data.assign(bin=cut).groupby("bin", observed=True)
    out = grouped.agg(n=("accepted", "size"), accepted=("accepted", "sum"), entropy_mean=(column, "mean"))
    out = out.reset_index()
    out["accepted"] = out["accepted"].astype(int)
    out["acceptance_rate"] = out["accepted"] / out["n"]
    low, high = proportion_confint(out["accepted"], out["n"], alpha=1 - confidence, method=ci_method)
    out["ci_low"], out["ci_high"] = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return out[["bin", "n", "accepted", "acceptance_rate", "ci_low", "ci_high", "entropy_mean"]]


@dataclass
class EntropyAcceptance:
    """Token table, per-type statistics and per-type binned acceptance for a set of generations."""

    tokens: pd.DataFrame  # token_table(...)
    stats: pd.DataFrame  # entropy_acceptance_stats(...), index = entropy column
    bins: dict[str, pd.DataFrame]  # entropy column -> acceptance_by_bin(...)


def entropy_acceptance(
    results: GenerationResult | Iterable[GenerationResult],
    bins: int | list[float] = 10,
    binning: Literal["quantile", "fixed"] = "quantile",
    confidence: float = 0.95,
) -> EntropyAcceptance:
    """Everything in this module for ``results``: the token table, the statistics and the binned rates."""
    tokens = token_table(results)
    columns = entropy_columns(tokens)
    return EntropyAcceptance(
        tokens=tokens,
        stats=entropy_acceptance_stats(tokens, columns),
        bins={c: acceptance_by_bin(tokens, c, bins, binning, confidence) for c in columns},
    )
