"""The figure people ask for: speedup per task type per method, grouped bars with their 95% CIs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BASELINE = "hf_generate"
# fields of a method id that are the rule's cost inputs or calibration, not its setting: left out of legend labels
COST_FIELDS = ("cost_ratio", "verify_curve", "verify_slope", "calib_intercept", "calib_slope", "calib_prob",
               "calib_curve", "next_intercept", "next_slope", "next_prob")


def legend_label(method: str, width: int = 90) -> str:
    """``method``'s id without its cost fields (``svip[cost_ratio=0.16,max_draft_len=8]`` ->
    ``svip[max_draft_len=8]``), its fields wrapped at ``width`` characters so that no label runs past the figure."""
    name, _, params = method.partition("[")
    kept = [p for p in params.rstrip("]").split(",") if p and p.split("=", 1)[0] not in COST_FIELDS]
    label = f"{name}[{', '.join(kept)}]" if kept else name  # wrapped between fields, never inside one
    return "\n".join(textwrap.wrap(label, width, subsequent_indent="  ", break_on_hyphens=False)) or label


def plot_speedup_by_task(speed: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Grouped bars: one group per category ("all" last), one bar per method (the baseline left out)."""
    data = speed[speed.method != BASELINE]
    categories = [c for c in sorted(data.category.unique()) if c != "all"] + ["all"]
    order = data[data.category == "all"].sort_values("speedup", ascending=False).method.tolist()
    width = 0.8 / max(len(order), 1)
    # the legend goes below the axes (long method ids would squeeze them from the side), one line per method
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(categories) * max(len(order), 1) * 0.35),
                                    4.2 + 0.16 * len(order)))
    x = np.arange(len(categories))
    for i, method in enumerate(order):
        rows = data[data.method == method].set_index("category").reindex(categories)
        values = rows.speedup.to_numpy(float)
        err = np.vstack([np.clip(values - rows.speedup_ci_low.to_numpy(float), 0, None),
                         np.clip(rows.speedup_ci_high.to_numpy(float) - values, 0, None)])
        ax.bar(x + (i - (len(order) - 1) / 2) * width, values, width, yerr=err, capsize=2, label=legend_label(method))
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, categories)
    ax.set_ylabel("speedup over HF generate (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=1, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` atomically (a hidden temporary file, then `os.replace`) and close it."""
    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:  # "tight": a legend below the axes is kept whole, however long its labels
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return path
