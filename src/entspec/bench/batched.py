"""`entspec bench --batch-sizes`: throughput against batch size, every method against HF `generate` batched
with padding at the same B (plain decoding's throughput baseline).

Each batch size is one experiment folder (``b1``, ``b4``, ...). A batch is the paired unit: the same prompts and
seed decoded by every method. Per batch, throughput = the rows' new tokens / the batch's wall time (its slowest
row); the speedup of a method is the ratio of mean throughputs over batches (Spec-Bench's ratio of means), with
a paired bootstrap 95% CI. Time to first token (p50 over rows) is reported apart from decode speed: a batch's
decode tokens/s = the tokens each row emitted after its first ones (a speculative round can bring several at
once) / (its wall time less its time to first token), averaged over batches. Per-sequence latency is each row's
own wall time (p50 / p99). Wasted verifier work per emitted token = (positions verified - tokens emitted) /
tokens emitted, where a row's verified positions are its share of every verifier call (rejected drafts and padding
to the batch's longest draft; for HF `generate`, the steps a finished row keeps riding along).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..metrics import load_rows  # noqa: E402
from ..metrics.compare import fmt, fmt_ci, paired_speedup  # noqa: E402
from .plot import legend_label, save_figure  # noqa: E402

BASELINE = "hf_generate"


def _verified(row) -> float:
    """Verifier positions this row took: its share of every call (HF generate: one per step of its batch; HF
    assisted generation does not say how many tokens each of its calls verified: NaN)."""
    result = row.result
    if row.method_kind == "hf_generate":
        return result.counters.get("verifier_calls", len(result.new_tokens))
    if not result.rounds:
        return float("nan")
    return sum(r.verify_width or (1 + r.drafted) for r in result.rounds)


def batch_frame(experiment_dir: str | Path) -> pd.DataFrame:
    """One line per (method, batch): batch size, tokens, wall time, throughput, wasted positions, acceptance."""
    rows = load_rows(Path(experiment_dir) / "results" / "results.jsonl")
    lines = []
    for row in rows:
        result = row.result
        batch = result.batch or {}  # a generation of one (batch_stop: cost at B = 1) has a size but no prompt list
        lines.append({"method": row.method, "kind": row.method_kind, "seed": row.seed, "prompt_id": row.prompt_id,
                      "size": batch.get("size", 1), "batch": "|".join(batch.get("prompts", [row.prompt_id])),
                      "tokens": len(result.new_tokens), "wall_s": result.wall_time_s,
                      "ttft_s": result.time_to_first_token_s,
                      "first_tokens": result.rounds[0].emitted if result.rounds else 1,
                      "verified": _verified(row), "drafted": sum(r.drafted for r in result.rounds),
                      "accepted": sum(r.accepted for r in result.rounds)})
    return pd.DataFrame(lines)  # a batch = the rows one call decoded together: (method, seed, batch)


def batch_table(experiment_dir: str | Path, batch_size: int, n_resamples: int = 2000) -> pd.DataFrame:
    """Per method at one batch size: speedup over batched HF generate [95% CI], tokens/s, latency p50/p99,
    wasted verifier positions per emitted token, acceptance."""
    frame = batch_frame(experiment_dir)
    per_batch = frame.groupby(["method", "seed", "batch"]).agg(
        tokens=("tokens", "sum"), first_tokens=("first_tokens", "sum"), wall_s=("wall_s", "max"),
        ttft_s=("ttft_s", lambda t: t.max(skipna=False))).reset_index()
    per_batch["tps"] = per_batch.tokens / per_batch.wall_s
    decode_s = per_batch.wall_s - per_batch.ttft_s  # a batch done in its first round has no decode phase: n/a
    per_batch["decode_tps"] = (per_batch.tokens - per_batch.first_tokens) / decode_s.where(decode_s > 0)
    base = per_batch[per_batch.method == BASELINE].set_index(["seed", "batch"]).tps
    if base.empty:
        raise ValueError(f"{experiment_dir}: no {BASELINE} rows to compare with")
    out = []
    for method, mine in per_batch.groupby("method", sort=False):
        paired = mine.set_index(["seed", "batch"]).tps.to_frame("x").join(base.rename("y"), how="inner")
        x, y = paired.x.to_numpy(float), paired.y.to_numpy(float)
        speedup = paired_speedup(x, y, n_resamples=n_resamples)
        rows = frame[frame.method == method]
        out.append({"B": batch_size, "method": method, "speedup": speedup["speedup"],
                    "ci_low": speedup["speedup_ci_low"], "ci_high": speedup["speedup_ci_high"],
                    "tokens_per_s": float(x.mean()), "batches": len(x),
                    "ttft_p50_s": float(rows.ttft_s.median(skipna=False)),
                    "decode_tokens_per_s": float(mine.decode_tps.mean(skipna=False)),
                    "latency_p50_s": float(np.percentile(rows.wall_s, 50)),
                    "latency_p99_s": float(np.percentile(rows.wall_s, 99)),
                    "wasted_per_token": float((rows.verified.sum(skipna=False) - rows.tokens.sum()) / rows.tokens.sum()),
                    "acceptance": float(rows.accepted.sum() / rows.drafted.sum()) if rows.drafted.sum() else np.nan})
    return pd.DataFrame(out).sort_values("speedup", ascending=False, ignore_index=True)


def batch_markdown(table: pd.DataFrame, command: str, other_setting: list[str] = ()) -> str:
    """The speedup-vs-B table, one block per batch size, with the command that produced it (and where the methods
    were tuned for another setting, ``other_setting``)."""
    lines = ["## Throughput against batch size", "", f"- command: `{command}`",
             *(f"- methods tuned for another setting: {note}" for note in other_setting),
             f"- speedup: mean tokens/s per batch over {BASELINE} batched with padding at the same B "
             "(paired by batch, 95% bootstrap CI), prefill included; TTFT: time to first token, p50 over rows; "
             "decode tokens/s: tokens emitted after each row's first ones / (batch wall time less TTFT), mean "
             "over batches; "
             "latency: each sequence's own wall time; wasted: verifier positions not emitted (rejected drafts, "
             "padding) per emitted token", "",
             "| B | method | speedup [95% CI] | tokens/s | TTFT p50 (s) | decode tokens/s | latency p50 / p99 (s) | "
             "wasted per token | acceptance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        speedup = fmt_ci(r.speedup, r.ci_low, r.ci_high, 2) if r.batches > 1 else f"{fmt(r.speedup, 2)} (1 batch: no CI)"
        lines.append(f"| {r.B} | {r.method} | {speedup} | {fmt(r.tokens_per_s, 2)} | {fmt(r.ttft_p50_s, 1)} | "
                     f"{fmt(r.decode_tokens_per_s, 2)} | "
                     f"{fmt(r.latency_p50_s, 1)} / {fmt(r.latency_p99_s, 1)} | {fmt(r.wasted_per_token, 2)} | "
                     f"{fmt(r.acceptance, 2)} |")
    return "\n".join(lines) + "\n"


def batch_replay_markdown(table: pd.DataFrame) -> str:
    """Batch replay's predicted decode speed next to the measured one (`entspec.replay.batch_check`)."""
    lines = ["### Batch replay against the runs", "",
             "- decode tokens/s (wall time less prefill) measured, and predicted by batch replay on greedy traces of "
             "the same prompts with the measured batch costs (`entspec.replay.batch_check`); exact: share of rows "
             "whose replayed rounds equal the run's", "",
             "| B | method | measured tokens/s | predicted tokens/s | predicted / measured | exact | batches |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r.B} | {r.method} | {fmt(r.measured_tokens_per_s, 2)} | {fmt(r.predicted_tokens_per_s, 2)} | "
                     f"{fmt(r.predicted_over_measured, 2)} | {fmt(r.exact, 2)} | {r.batches} |")
    return "\n".join(lines) + "\n"


def plot_speedup_vs_batch(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Speedup over batched HF generate against B, one line per method, with 95% CI bars."""
    fig, ax = plt.subplots(figsize=(7.5, 5.6))
    sizes = sorted(table.B.unique())
    groups = list(table[table.method != BASELINE].groupby("method"))
    for i, (method, rows) in enumerate(groups):
        rows = rows.set_index("B").reindex(sizes)
        values = rows.speedup.to_numpy(float)
        err = np.vstack([np.clip(values - rows.ci_low.to_numpy(float), 0, None),
                         np.clip(rows.ci_high.to_numpy(float) - values, 0, None)])
        dodge = 1 + 0.04 * (i - (len(groups) - 1) / 2)  # side by side, so the intervals do not hide each other
        ax.errorbar(np.array(sizes) * dodge, values, yerr=err, marker="o", capsize=3, label=legend_label(method))
    if (table.batches < 2).any():
        single = ", ".join(str(b) for b in sorted(table[table.batches < 2].B.unique()))
        ax.text(0.01, 0.01, f"B = {single}: one batch, no interval", transform=ax.transAxes, fontsize=7, alpha=0.7)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size B")
    ax.set_ylabel(f"speedup over {BASELINE} at the same B (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
