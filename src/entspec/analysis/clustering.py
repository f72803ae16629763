"""Performance clustering: which configurations (or prompts) behave alike?

Each item (a configuration, or a prompt) is a vector of metric means; the vectors are standardized
(``StandardScaler``) and clustered with ``KMeans``, k chosen by the silhouette score over
2 .. min(6, n − 1). Items with a missing metric (e.g. Hugging Face baselines, which have no per-round
trace and so no acceptance rate) are left out and listed. Each cluster is described in words from its
centroid: a feature is "high" or "low" when the centroid is more than half a standard deviation from the
mean of all items, and the speed is "above" or "below baseline speed" by the mean speedup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

__all__ = ["Clustering", "cluster_items", "configuration_features", "prompt_features", "CONFIG_FEATURES",
           "PROMPT_FEATURES"]

CONFIG_FEATURES = ("speedup", "acceptance_rate", "mean_draft_length", "mean_accepted_tokens", "oracle_gap")
PROMPT_FEATURES = ("speedup", "acceptance_rate", "mean_accepted_tokens", "mean_draft_entropy",
                   "baseline_tokens_per_s")
# feature -> (words when high, words when low)
WORDS = {
    "acceptance_rate": ("high acceptance", "low acceptance"),
    "mean_draft_length": ("long drafts", "short drafts"),
    "mean_accepted_tokens": ("many tokens per verifier call", "few tokens per verifier call"),
    "oracle_gap": ("close to the oracle", "far from the oracle"),
    "mean_draft_entropy": ("uncertain drafter (high entropy)", "confident drafter (low entropy)"),
    "baseline_tokens_per_s": ("fast baseline", "slow baseline"),
}
MIN_ITEMS = 3


@dataclass
class Clustering:
    """Result of :func:`cluster_items`. ``labels`` is empty and ``skipped`` says why when it did not run."""

    what: str  # "configurations" or "prompts"
    features: pd.DataFrame  # items x features (original units), the clustered items only
    labels: pd.Series = field(default_factory=lambda: pd.Series(dtype=int))  # item -> cluster (1-based)
    k: int = 0
    silhouette: float = float("nan")
    silhouettes: dict[int, float] = field(default_factory=dict)  # k -> score, every k tried
    left_out: list[str] = field(default_factory=list)  # items with a missing feature
    skipped: str | None = None
    descriptions: list[str] = field(default_factory=list)  # one sentence per cluster

    def table(self) -> pd.DataFrame:
        """Items with their cluster and features (for clusters.csv)."""
        if self.labels.empty:
            return pd.DataFrame(columns=["what", "item", "cluster"])
        out = self.features.assign(cluster=self.labels).reset_index(names="item")
        return out.assign(what=self.what)[["what", "item", "cluster", *self.features.columns]]


def configuration_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per speculative configuration (not the baseline): mean of :data:`CONFIG_FEATURES` over generations."""
    rows = frame[~frame["is_baseline"] & (frame["method_kind"] != "autoregressive")]
    return rows.groupby("method", sort=True)[list(CONFIG_FEATURES)].mean()


def prompt_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: mean of :data:`PROMPT_FEATURES` over the entspec generations of that prompt
    (``baseline_tokens_per_s`` is the baseline's own speed on it)."""
    rows = frame[frame["method_kind"] == "entspec"]
    return rows.groupby("prompt_id", sort=True)[list(PROMPT_FEATURES)].mean()


def cluster_items(features: pd.DataFrame, what: str, max_k: int = 6, seed: int = 0) -> Clustering:
    """Standardize, pick k by silhouette over 2..min(max_k, n − 1), KMeans, and describe each cluster."""
    features = features.dropna(axis=1, how="all")
    complete = features.dropna()
    left_out = [str(i) for i in features.index.difference(complete.index)]
    result = Clustering(what=what, features=complete, left_out=left_out)
    n = len(complete)
    if n < MIN_ITEMS:
        result.skipped = f"only {n} {what} with complete metrics (clustering needs at least {MIN_ITEMS})"
        return result
    z = StandardScaler().fit_transform(complete.to_numpy(float))  # constant features become 0
    if len(np.unique(z.round(12), axis=0)) < 2:
        result.skipped = f"all {n} {what} have identical metrics"
        return result
    best = None
    for k in range(2, min(max_k, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
        if len(set(labels)) < 2 or len(set(labels)) >= n:
            continue
        score = float(silhouette_score(z, labels))
        result.silhouettes[k] = score
        if best is None or score > best[0]:
            best = (score, k, labels)
    if best is None:
        result.skipped = f"no k in 2..{min(max_k, n - 1)} gave a valid clustering of {n} {what}"
        return result
    result.silhouette, result.k, labels = best
    # number clusters 1.. by decreasing mean speedup (cluster 1 = fastest) when speedup is a feature
    order = pd.Series(z[:, list(complete.columns).index("speedup")] if "speedup" in complete else np.zeros(n))
    rank = order.groupby(labels).mean().sort_values(ascending=False).index
    relabel = {old: new for new, old in enumerate(rank, start=1)}
    result.labels = pd.Series([relabel[label] for label in labels], index=complete.index, name="cluster")
    result.descriptions = describe(complete, result.labels, z)
    return result


def describe(features: pd.DataFrame, labels: pd.Series, z: np.ndarray) -> list[str]:
    """One sentence per cluster: salient features of its centroid, its speed, and its members."""
    zf = pd.DataFrame(z, index=features.index, columns=features.columns)
    out = []
    for cluster in sorted(labels.unique()):
        members = labels.index[labels == cluster]
        centroid_z = zf.loc[members].mean()
        words = []
        for name, (high, low) in WORDS.items():
            if name in centroid_z and centroid_z[name] > 0.5:
                words.append(high)
            elif name in centroid_z and centroid_z[name] < -0.5:
                words.append(low)
        if "speedup" in features:
            speedup = float(features.loc[members, "speedup"].mean())
            if np.isfinite(speedup):
                side = "above" if speedup > 1 else "below"
                words.append(f"{side} baseline speed (mean speedup {speedup:.2f}x)")
        summary = ", ".join(words) if words else "typical on every metric"
        names = ", ".join(str(m) for m in members)
        out.append(f"cluster {cluster} ({len(members)}): {summary}: {names}")
    return out
