"""The three figures of an analysis. Every panel without data says so instead of failing.

* :func:`plot_entropy` -> ``entropy_analysis.png``: entropy of accepted vs rejected drafted tokens, acceptance
  by entropy bin (Wilson intervals), AUROC of entropy as a rejection score, acceptance by draft position.
* :func:`plot_performance` -> ``performance_analysis.png``: tokens/s and speedup per method (bootstrap CIs,
  one dot per category), draft-length distributions, oracle-gap ratio.
* :func:`plot_comparison` -> ``comparison_analysis.png``: speedup vs threshold for each strategy with the best
  fixed k and HF assisted generation as reference lines; acceptance rate vs mean draft length.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entspec.atomic import atomic_path  # noqa: E402
from entspec.metrics import EntropyAcceptance  # noqa: E402

__all__ = ["plot_entropy", "plot_performance", "plot_comparison", "DPI"]

DPI = 120
ACCEPTED_COLOR, REJECTED_COLOR = "#2a9d5c", "#d1495b"
BAR_COLOR = "#4c78a8"
OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # legends right of their panel, never over data
REFERENCE_STYLES = {  # label -> line style of the horizontal reference lines
    "baseline": dict(color="0.35", linestyle="-", linewidth=1.0),
    "best fixed k": dict(color="#e07a1f", linestyle="--", linewidth=1.6),
    "HF assisted (default)": dict(color="#7b3fa0", linestyle=":", linewidth=2.0),
    "true oracle (replay)": dict(color="#2a9d5c", linestyle="-.", linewidth=1.6),
}


def no_data(ax: plt.Axes, title: str, why: str = "no data") -> None:
    """An empty panel that keeps its title and says why it is empty."""
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.4",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _entropy_label(column: str) -> str:
    return column[len("entropy_"):] if column.startswith("entropy_") else "configured type"


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure atomically (a killed analysis leaves the previous figure or none, never half of one)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return path


def _wrap(method: str, width: int = 36) -> str:
    """A long method id on several lines, broken after "[" and commas, for axis labels."""
    lines = [""]
    for part in re.split(r"(?<=[\[,])", method):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _strategy_colors(strategies: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(strategies)))}


# --------------------------------------------------------------------------------------------- entropy
def plot_entropy(ea: EntropyAcceptance, positions: Mapping[str, Sequence[float]], path: Path,
                 columns: Sequence[str] | None = None, level: str = "95%") -> Path:
    """Four panels on the pooled token table of the speculative (traced) generations.

    Args:
        ea: :func:`entspec.metrics.entropy_acceptance` of those generations.
        positions: method -> per-position acceptance rate (:func:`entspec.metrics.per_position_acceptance`).
        columns: entropy columns to show (default: every ``entropy_<type>``, else ``entropy``).
        level: the intervals' confidence level, as labelled ("95%").
    """
    tokens = ea.tokens
    if columns is None:
        typed = [c for c in tokens.columns if c.startswith("entropy_")]
        columns = typed or (["entropy"] if "entropy" in tokens and tokens["entropy"].notna().any() else [])
    columns = [c for c in columns if c in tokens and tokens[c].notna().any()]
    fig, axes = plt.subplots(2, 2, figsize=(16, 9), layout="constrained")
    fig.suptitle(f"Drafter entropy vs the verifier's verdict ({len(tokens)} drafted tokens judged)", fontsize=13)
    _entropy_violins(axes[0, 0], tokens, columns)
    _acceptance_by_bin(axes[0, 1], ea, columns, level)
    _auroc_bars(axes[1, 0], ea, columns)
    _position_acceptance(axes[1, 1], positions)
    return _save(fig, path)


def _entropy_violins(ax: plt.Axes, tokens: pd.DataFrame, columns: Sequence[str]) -> None:
    title = "Entropy of accepted vs rejected drafted tokens"
    if not columns or tokens.empty:
        return no_data(ax, title, "no drafted tokens with an entropy")
    accepted = tokens["accepted"].to_numpy(bool)
    ticks, labels = [], []
    for i, column in enumerate(columns):
        h = tokens[column].to_numpy(float)
        for offset, mask, color in ((-0.2, accepted, ACCEPTED_COLOR), (0.2, ~accepted, REJECTED_COLOR)):
            values = h[mask & ~np.isnan(h)]
            x = i + offset
            if values.size >= 2 and np.ptp(values) > 0:
                parts = ax.violinplot(values, positions=[x], widths=0.36, showmedians=True, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(color)
                    body.set_alpha(0.55)
                parts["cmedians"].set_color("black")
            elif values.size:  # one value, or all equal: a kernel density is undefined
                ax.scatter([x] * values.size, values, color=color, s=18, zorder=3)
        n_acc, n_rej = int(accepted[~np.isnan(h)].sum()), int((~accepted[~np.isnan(h)]).sum())
        ticks.append(i)
        labels.append(f"{_entropy_label(column)}\n(n={n_acc} acc / {n_rej} rej)")
    ax.set_xticks(ticks, labels)
    ax.set_ylabel("entropy of the draft distribution (nats)")
    ax.set_title(title)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=ACCEPTED_COLOR, alpha=0.55),
                       plt.Rectangle((0, 0), 1, 1, color=REJECTED_COLOR, alpha=0.55)],
              labels=["accepted", "rejected\n(first rejection\nof a round)"], fontsize=9, **OUTSIDE)
    ax.grid(axis="y", alpha=0.3)


def _acceptance_by_bin(ax: plt.Axes, ea: EntropyAcceptance, columns: Sequence[str], level: str) -> None:
    title = f"Acceptance rate by entropy bin ({level} Wilson CI)"
    shown = [c for c in columns if c in ea.bins and not ea.bins[c].empty]
    if not shown:
        return no_data(ax, title)
    for column in shown:
        bins = ea.bins[column]
        rate = bins["acceptance_rate"].to_numpy(float)
        err = _error_bars(rate, bins["ci_low"], bins["ci_high"])
        ax.errorbar(bins["entropy_mean"], rate, yerr=err, marker="o", capsize=3, label=_entropy_label(column))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("mean entropy in the bin (nats; quantile bins)")
    ax.set_ylabel("acceptance rate")
    ax.set_title(title)
    ax.legend(title="entropy type", fontsize=9, **OUTSIDE)
    ax.grid(alpha=0.3)


def _auroc_bars(ax: plt.Axes, ea: EntropyAcceptance, columns: Sequence[str]) -> None:
    title = "Entropy as a rejection score: AUROC per entropy type"
    stats = ea.stats
    shown = [c for c in columns
             if not stats.empty and c in stats.index and np.isfinite(stats.loc[c, "auroc_rejection"])]
    if not shown:
        return no_data(ax, title, "no data (needs both accepted and rejected tokens)")
    values = [float(stats.loc[c, "auroc_rejection"]) for c in shown]
    bars = ax.bar([_entropy_label(c) for c in shown], values, color=BAR_COLOR, width=0.6)
    for bar, column, value in zip(bars, shown, values):
        rho = stats.loc[column, "spearman_rho"]
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.02, f"{value:.2f}\nrho={rho:.2f}", ha="center",
                va="bottom", fontsize=9)
    ax.axhline(0.5, **REFERENCE_STYLES["baseline"], label="0.5 = no signal")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("AUROC (higher entropy -> rejection)")
    ax.set_xlabel("entropy type (rho: Spearman of entropy with acceptance)")
    ax.set_title(title)
    ax.legend(fontsize=9, **OUTSIDE)
    ax.grid(axis="y", alpha=0.3)


def _position_acceptance(ax: plt.Axes, positions: Mapping[str, Sequence[float]]) -> None:
    title = "Acceptance rate by draft position"
    shown = {m: p for m, p in positions.items() if len(p)}
    if not shown:
        return no_data(ax, title)
    cmap = plt.get_cmap("tab20")
    for i, (method, rates) in enumerate(shown.items()):
        ax.plot(np.arange(1, len(rates) + 1), rates, marker="o", markersize=3, color=cmap(i % 20), label=_wrap(method))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("position in the draft (1 = first drafted token)")
    ax.set_ylabel("P(accepted | drafted at this position)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(shown) > 8 else 1, **OUTSIDE)
    ax.grid(alpha=0.3)


# ----------------------------------------------------------------------------------------- performance
def plot_performance(table: pd.DataFrame, draft_lengths: Mapping[str, np.ndarray], path: Path,
                     baseline: str | None = None, level: str = "95%") -> Path:
    """Tokens/s and speedup per method (bars: all prompts with a ``level`` CI; dots: per category), draft lengths
    per round (heat map of shares) and oracle-gap ratio (mean per prompt with CI).

    Args:
        table: :func:`entspec.analysis.stats.method_table` (category "all" plus each category).
        draft_lengths: method -> drafted tokens of every round.
        baseline: the baseline's name, for the titles.
    """
    overall = table[table["category"] == "all"].copy()
    order = overall.sort_values(["speedup", "tokens_per_s"], ascending=True, na_position="first")["method"].tolist()
    n = max(len(order), 1)
    n_spec = max(len(draft_lengths), 1)
    per_row = 0.2 + 0.16 * max((_wrap(m).count("\n") + 1 for m in order), default=1)  # inches per method
    height = max(7.5, per_row * (n + n_spec) + 3)
    fig, axes = plt.subplots(2, 2, figsize=(17, height), layout="constrained",
                             gridspec_kw={"height_ratios": [n + 1, n_spec + 1]})
    fig.suptitle("Performance per method" + (f" (speedup vs {baseline})" if baseline else ""), fontsize=13)
    categories = sorted(c for c in table["category"].unique() if c != "all")
    _bars_with_categories(axes[0, 0], table, order, categories, "tokens_per_s", "tokens_per_s_ci_low",
                          "tokens_per_s_ci_high", "tokens per second (prefill included)",
                          f"Throughput: mean over prompts, {level} bootstrap CI", legend=False)
    _bars_with_categories(axes[0, 1], table, order, categories, "speedup", "speedup_ci_low", "speedup_ci_high",
                          f"speedup vs {baseline} (x)" if baseline else "speedup (x)",
                          f"Speedup (Spec-Bench ratio of means), {level} CI", reference=1.0)
    _draft_length_heatmap(axes[1, 0], draft_lengths, order)
    _oracle_gap(axes[1, 1], overall, order, level)
    return _save(fig, path)


def _bars_with_categories(ax, table, order, categories, column, low, high, xlabel, title, reference=None,
                          legend=True):
    overall = table[table["category"] == "all"].set_index("method").reindex(order)
    values = overall[column].to_numpy(float)
    if not len(order) or np.all(np.isnan(values)):
        return no_data(ax, title, "no data (no baseline?)" if column == "speedup" else "no data")
    y = np.arange(len(order))
    err = _error_bars(values, overall[low], overall[high])
    ax.barh(y, np.nan_to_num(values), xerr=err, color=BAR_COLOR, alpha=0.75, capsize=3, label="all prompts")
    palette = plt.get_cmap("Dark2")
    if len(categories) > 1:
        for j, category in enumerate(categories):
            part = table[table["category"] == category].set_index("method").reindex(order)
            offset = (j - (len(categories) - 1) / 2) * 0.5 / len(categories)
            ax.scatter(part[column], y + offset, color=palette(j % 8), s=22, zorder=3, label=category,
                       edgecolor="white", linewidth=0.5)
    if reference is not None:
        ax.axvline(reference, **REFERENCE_STYLES["baseline"])
    ax.set_yticks(y, [_wrap(m) for m in order], fontsize=9)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8, title="category" if len(categories) > 1 else None, **OUTSIDE)
    ax.grid(axis="x", alpha=0.3)


def _draft_length_heatmap(ax: plt.Axes, draft_lengths: Mapping[str, np.ndarray], order: Sequence[str]) -> None:
    title = "Draft lengths: share of rounds per drafted length"
    methods = [m for m in reversed(order) if m in draft_lengths and len(draft_lengths[m])]
    if not methods:
        return no_data(ax, title, "no data (no speculative method with a per-round trace)")
    longest = int(max(np.max(draft_lengths[m]) for m in methods))
    shares = np.array([np.bincount(np.asarray(draft_lengths[m], dtype=int), minlength=longest + 1)
                       / len(draft_lengths[m]) for m in methods])
    image = ax.imshow(shares, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if longest <= 16:  # annotate the cells while they are wide enough to read
        for i, j in zip(*np.nonzero(shares >= 0.005)):
            ax.text(j, i, f"{100 * shares[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.55 else "black")
    means = [float(np.mean(draft_lengths[m])) for m in methods]
    ax.set_yticks(np.arange(len(methods)), [f"{_wrap(m)}\n(mean {v:.1f} per round)" for m, v in zip(methods, means)],
                  fontsize=9)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("drafted tokens in the round" + (" (cell labels: % of rounds)" if longest <= 16 else ""))
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(image, ax=ax, label="share of rounds", fraction=0.04, pad=0.01)


def _oracle_gap(ax: plt.Axes, overall: pd.DataFrame, order: Sequence[str], level: str) -> None:
    """Share of the true oracle (replayed on traces) beside the conservative DISCO bound, per method."""
    title = "How close to the oracle: oracle time / method time"
    metrics = [(m, label, color) for m, label, color in (
        ("true_oracle_share", "share of the true oracle (replay, same cap)", "#2a9d5c"),
        ("oracle_gap", "DISCO oracle gap (conservative bound)", "#a7c7c4")) if overall[m].notna().any()]
    data = overall.set_index("method").reindex(order)
    data = data[data["method_kind"] != "autoregressive"]
    data = data[data[[m for m, _, _ in metrics]].notna().any(axis=1)] if metrics else data.iloc[:0]
    if data.empty:
        return no_data(ax, title, "no data (no speculative method with a per-round trace)")
    y, height = np.arange(len(data)), 0.8 / len(metrics)
    for j, (metric, label, color) in enumerate(metrics):
        values = data[metric].to_numpy(float)
        offset = y - (j - (len(metrics) - 1) / 2) * height  # first metric on top, as in the legend
        err = _error_bars(values, data[f"{metric}_ci_low"], data[f"{metric}_ci_high"])
        ax.barh(offset, np.nan_to_num(values), height=height, xerr=err, color=color, capsize=2, label=label)
        for yi, v in zip(offset, values):
            if np.isfinite(v):
                ax.text(0.015, yi, f"{v:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, **REFERENCE_STYLES["baseline"])
    ax.set_xlim(0, 1.12)
    ax.set_yticks(y, [_wrap(m) for m in data.index], fontsize=9)
    ax.set_ylim(-0.6, len(data) - 0.4)
    ax.set_xlabel(f"1 = the oracle (mean over prompts, {level} CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, **OUTSIDE)
    ax.grid(axis="x", alpha=0.3)


# ------------------------------------------------------------------------------------------ comparison
def plot_comparison(overall: pd.DataFrame, sweeps: pd.DataFrame, references: Mapping[str, float], path: Path,
                    baseline: str | None = None, level: str = "95%", labels: Mapping[str, str] | None = None,
                    curves: pd.DataFrame | None = None) -> Path:
    """One panel per entspec strategy with data: speedup vs its threshold parameter (measured points with CIs,
    one colour per setting of the other parameters that vary; with traces, the replayed curve of each setting
    and the true oracle), then a scatter of acceptance rate vs mean draft length.

    Args:
        overall: the "all" rows of :func:`entspec.analysis.stats.method_table`.
        sweeps: per entspec method: strategy, sweep_parameter, sweep_value, line (label of the other varying
            parameters, "" when none).
        references: label -> speedup drawn as a horizontal line on every sweep panel (NaN: not drawn).
        labels: method -> label of its point in the acceptance scatter (default the method id).
        curves: :func:`entspec.analysis.curves.threshold_curves` (None: no traces, measured points only).
    """
    data = overall.set_index("method")
    curves = curves if curves is not None else pd.DataFrame(columns=["strategy", "line", "value", "speedup"])
    measured = sweeps[sweeps["sweep_value"].notna() & data["speedup"].reindex(sweeps.index).notna()]
    strategies = sorted(set(measured["strategy"]) | set(curves["strategy"]))
    n_panels = max(len(strategies), 1) + 1
    ncols = 2 if n_panels in (2, 4) else 3
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.8 * nrows), layout="constrained", squeeze=False)
    fig.suptitle("Threshold sweeps" + (f" (measured speedup vs {baseline})" if baseline else ""), fontsize=13)
    flat = list(axes.ravel())
    if not strategies:
        no_data(flat[0], "Speedup vs threshold", "no data (no entspec strategy with a speedup in this experiment)")
    oracle = float(curves["oracle_speedup"].iloc[0]) if len(curves) else float("nan")
    for ax, strategy in zip(flat, strategies):
        _sweep_panel(ax, strategy, sweeps[sweeps["strategy"] == strategy], data,
                     curves[curves["strategy"] == strategy], {**references, "true oracle (replay)": oracle}, level)
    _acceptance_vs_length(flat[len(strategies) or 1], overall, labels or {})
    handles = [plt.Line2D([], [], **REFERENCE_STYLES["baseline"], label="baseline (1x)")]
    handles += [plt.Line2D([], [], **REFERENCE_STYLES[label], label=f"{label}: {value:.2f}x")
                for label, value in {**references, "true oracle (replay)": oracle}.items()
                if value is not None and np.isfinite(value)]
    handles += [plt.Line2D([], [], color="0.2", marker="o", linestyle="none",
                           label=f"measured vs {baseline or 'baseline'} ({level} CI)")]
    if len(curves):
        handles.append(plt.Line2D([], [], color="0.2", label="replayed on the traces: vs plain decoding, cost model"))
    spare = flat[n_panels:]
    for ax in spare:
        ax.axis("off")
    if spare:  # the legend fills the spare cell; else it goes below the panels
        spare[0].legend(handles=handles, loc="center", fontsize=9, title="lines and points", title_fontsize=9)
    else:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=9)
    return _save(fig, path)


def _sweep_panel(ax, strategy, sweep, data, curves, references, level):
    parameter = sweep["sweep_parameter"].dropna().iloc[0] if sweep["sweep_parameter"].notna().any() else "threshold"
    cmap = plt.get_cmap("tab10")
    lines = sorted(set(sweep["line"]) | set(curves["line"]))
    for i, line in enumerate(lines):
        color, label = cmap(i % 10), line or strategy
        curve = curves[curves["line"] == line].sort_values("value")
        if len(curve):
            ax.plot(curve["value"], curve["speedup"], color=color, linewidth=1.6, label=label)
        part = sweep[(sweep["line"] == line) & sweep["sweep_value"].notna()].sort_values("sweep_value")
        rows = data.reindex(part.index)
        values = rows["speedup"].to_numpy(float)
        err = _error_bars(values, rows["speedup_ci_low"], rows["speedup_ci_high"])
        ax.errorbar(part["sweep_value"], values, yerr=err, marker="o", capsize=3, color=color, zorder=3,
                    linestyle="none" if len(curve) else "-", label=None if len(curve) else label)
    ax.axhline(1.0, **REFERENCE_STYLES["baseline"])
    for label, value in references.items():
        if value is not None and np.isfinite(value):
            ax.axhline(value, **REFERENCE_STYLES[label])
    integer = parameter in ("max_draft_len", "heuristic_initial")
    unit = " (nats)" if parameter in ("theta_abs", "theta_window") else " (tokens)" if integer else ""
    ax.set_xlabel(parameter + unit)
    xs = np.unique(sweep["sweep_value"].dropna().to_numpy(float))
    if curves.empty and xs.size <= 6:  # measured points only: tick exactly the measured values
        ax.set_xticks(xs, [_short_number(x) for x in xs])
        if xs.size == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1) if integer else ax.set_xlim(xs[0] * 0.5, xs[0] * 1.5 + 0.1)
    ax.set_ylabel("speedup (x)")
    ax.set_title(f"{strategy}: speedup vs {parameter}")
    if len(lines) > 1:
        ax.legend(fontsize=7, title="setting", title_fontsize=7, **OUTSIDE)
    ax.grid(alpha=0.3)


def _short_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _acceptance_vs_length(ax: plt.Axes, overall: pd.DataFrame, labels: Mapping[str, str]) -> None:
    title = "Acceptance rate vs mean draft length"
    data = overall[overall["acceptance_rate"].notna() & overall["mean_draft_length"].notna()]
    if data.empty:
        return no_data(ax, title, "no data (no method with a per-round trace drafted anything)")
    colors = _strategy_colors(data["strategy"])
    for strategy, part in data.groupby("strategy"):
        ax.scatter(part["mean_draft_length"], part["acceptance_rate"], color=colors[strategy], s=45, label=strategy,
                   edgecolor="black", linewidth=0.4, zorder=3)
    if len(data) <= 16:  # label points with their parameters; alternate above/below to limit overlaps
        middle = data["mean_draft_length"].mean()
        for i, (_, row) in enumerate(data.sort_values("mean_draft_length").iterrows()):
            left = row["mean_draft_length"] > middle  # labels point inwards, so they stay inside the panel
            label, xy = labels.get(row["method"], row["method"]), (row["mean_draft_length"], row["acceptance_rate"])
            ax.annotate(label, xy, fontsize=7, xytext=(-5 if left else 5, 6 if i % 2 == 0 else -11),
                        textcoords="offset points", color="0.2", ha="right" if left else "left").set_in_layout(False)
    ax.set_xlabel("mean draft length (drafted tokens per verifier call)")
    ax.set_ylabel("acceptance rate (accepted / drafted)")
    ax.set_ylim(max(0.0, data["acceptance_rate"].min() - 0.1), min(1.0, data["acceptance_rate"].max() + 0.1) + 0.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(colors), 5))
    ax.grid(alpha=0.3)


def _error_bars(values, low, high) -> np.ndarray:
    """``[2, n]`` distances to an interval, for matplotlib: NaN -> 0 and never negative (an estimate may sit
    a rounding error outside its own interval, e.g. a rate of 1.0 with a Wilson upper bound of 0.9999999)."""
    values = np.asarray(values, dtype=float)
    err = np.vstack([values - np.asarray(low, dtype=float), np.asarray(high, dtype=float) - values])
    return np.nan_to_num(np.clip(err, 0.0, None))
