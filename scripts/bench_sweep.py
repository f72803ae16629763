"""Speedup against one setting across several `entspec bench` runs: output length, temperature, ...

Each run folder is one `entspec bench --out DIR` (its ``<dtype>/results/results.jsonl``); the runs differ in
one generation setting (``--axis``, read from each run's rows, e.g. ``max_new_tokens`` or ``temperature``).
For every method: speedup over HF `generate` in that run (ratio of mean tokens/s, paired bootstrap CI: the
bench's own tables) and the mean time to first token. Writes a markdown table and a line plot.

    .venv/bin/python scripts/bench_sweep.py runs/bench-length-64 runs/bench-length-256 runs/bench-length-512 \\
        --axis max_new_tokens --out docs/figures/speedup-vs-length.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from entspec.bench.report import bench_tables  # noqa: E402
from entspec.metrics import load_rows, summarize  # noqa: E402


def sweep_table(runs: list[Path], axis: str, dtype: str = "bfloat16") -> pd.DataFrame:
    """One row per (run, method): the axis value, speedup with CI over all prompts, mean TTFT."""
    out = []
    for run in runs:
        folder = run / dtype
        rows = load_rows(folder / "results" / "results.jsonl")
        values = {r.config.get(axis) for r in rows if axis in r.config}
        if len(values) != 1:
            raise ValueError(f"{folder}: {axis} must take one value in a run, found {sorted(map(str, values))}")
        value = values.pop()
        speed = bench_tables(folder)["speed"]
        speed = speed[speed.category == "all"].set_index("method")
        ttft = summarize(rows).groupby("method")["time_to_first_token_s"].mean()
        for method, row in speed.iterrows():
            out.append({axis: value, "run": str(run), "method": method,
                        "speedup": row.speedup, "ci_low": row.speedup_ci_low, "ci_high": row.speedup_ci_high,
                        "ttft_s": ttft.get(method, float("nan"))})
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, axis: str) -> str:
    values = sorted(table[axis].unique())
    lines = [f"| method | " + " | ".join(f"{axis} = {v}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for method, part in table.groupby("method", sort=False):
        cells = []
        for v in values:
            hit = part[part[axis] == v]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            ttft = "" if pd.isna(r.ttft_s) else f"; TTFT {1e3 * r.ttft_s:.0f} ms"
            cells.append(f"{r.speedup:.2f}× [{r.ci_low:.2f}, {r.ci_high:.2f}]{ttft}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, axis: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, part in table.groupby("method", sort=False):
        part = part.sort_values(axis)
        ax.errorbar(part[axis], part.speedup, yerr=[part.speedup - part.ci_low, part.ci_high - part.speedup],
                    marker="o", capsize=3, label=method if len(method) < 48 else method[:45] + "...")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(axis)
    ax.set_ylabel("speedup over HF generate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="entspec bench --out folders")
    parser.add_argument("--axis", default="max_new_tokens", help="the setting the runs differ in")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, required=True, help="the figure (.png)")
    args = parser.parse_args()
    table = sweep_table(args.runs, args.axis, args.dtype)
    print(markdown(table, args.axis))
    print(f"\nfigure: {plot(table, args.axis, args.out)}")


if __name__ == "__main__":
    main()
