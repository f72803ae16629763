"""Markdown: the Spec-Bench-style tables, the summary printed by ``make demo`` and ``final_report.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from entspec.analysis.clustering import Clustering
from entspec.metrics.compare import NA, finite, fmt, fmt_ci, fmt_p, markdown_table  # noqa: F401  (re-exported)

__all__ = ["markdown_table", "fmt_ci", "oracle_columns", "category_table", "summary_markdown", "ReportInputs",
           "build_report"]

def level_label(confidence: float) -> str:
    """0.95 -> "95%", 0.975 -> "97.5%": the label of every interval column."""
    return f"{confidence * 100:.4g}%"


def oracle_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, header) of the oracle columns with data: the true oracle's share (traces) and the DISCO bound."""
    return [(m, h) for m, h in (("true_oracle_share", "share of true oracle (replay)"),
                                ("oracle_gap", "DISCO oracle gap (conservative bound)")) if table[m].notna().any()]


def category_table(table: pd.DataFrame, category: str, confidence: float = 0.95) -> str:
    """Spec-Bench-style table of one category of :func:`entspec.analysis.stats.method_table`, fastest first."""
    part = table[table["category"] == category].sort_values(["speedup", "tokens_per_s"], ascending=False,
                                                            na_position="last")
    oracle = oracle_columns(table)
    rows = [(r.method, r.method_kind, r.n_prompts, fmt_ci(r.speedup, r.speedup_ci_low, r.speedup_ci_high),
             fmt_ci(r.mean_accepted_tokens, r.mean_accepted_tokens_ci_low, r.mean_accepted_tokens_ci_high),
             fmt_ci(r.acceptance_rate, r.acceptance_rate_ci_low, r.acceptance_rate_ci_high),
             fmt_ci(r.tokens_per_s, r.tokens_per_s_ci_low, r.tokens_per_s_ci_high, 1),
             *(fmt_ci(getattr(r, m), getattr(r, f"{m}_ci_low"), getattr(r, f"{m}_ci_high"))
               if r.method_kind == "entspec" else NA for m, _ in oracle))
            for r in part.itertuples()]
    ci = f"[{level_label(confidence)} CI]"
    return markdown_table(("method", "kind", "prompts", f"speedup {ci}", f"mean accepted tokens {ci}",
                           f"acceptance rate {ci}", f"tokens/s {ci}", *(f"{h} {ci}" for _, h in oracle)), rows)


def summary_markdown(table: pd.DataFrame, baseline: str | None, confidence: float = 0.95) -> str:
    """The compact table ``make demo`` prints: every method over all prompts, fastest first."""
    part = table[table["category"] == "all"].sort_values(["speedup", "tokens_per_s"], ascending=False,
                                                         na_position="last")
    oracle = oracle_columns(table)
    rows = [(r.method, fmt_ci(r.speedup, r.speedup_ci_low, r.speedup_ci_high, 2), fmt(r.tokens_per_s, 1),
             fmt(r.mean_accepted_tokens, 2), fmt(r.acceptance_rate, 2), fmt(r.mean_draft_length, 2),
             *(fmt(getattr(r, m), 2) if r.method_kind == "entspec" else NA for m, _ in oracle))
            for r in part.itertuples()]
    header = ("method", f"speedup vs {baseline or 'n/a'} [{level_label(confidence)} CI]", "tokens/s",
              "mean accepted tokens", "acceptance rate", "mean draft length", *(h for _, h in oracle))
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------------------- report
def _setup(experiment_dir: str, config: Mapping, manifest: Mapping, frame: pd.DataFrame,
           baseline: str | None, damaged_lines: Sequence[int] = ()) -> str:
    seeds = sorted(frame["seed"].unique().tolist())
    per_category = frame.groupby("category")["prompt_id"].nunique()
    lines = [
        f"- experiment folder: `{experiment_dir}`",
        f"- generations analysed: {len(frame)} ({frame['method'].nunique()} methods x "
        f"{frame['prompt_id'].nunique()} prompts x {len(seeds)} seed(s): {seeds})",
        f"- categories: {', '.join(f'{c} ({n} prompts)' for c, n in per_category.items())}",
        f"- speedup baseline: `{baseline}`" if baseline else "- speedup baseline: none (no hf_generate or "
        "autoregressive rows); speedups are n/a",
    ]
    if damaged_lines:
        lines.append(f"- **{len(damaged_lines)} damaged row(s) of results.jsonl skipped on request** (lines "
                     f"{', '.join(map(str, damaged_lines))}): their units are missing from every table")
    for key in ("temperature", "max_new_tokens", "top_k", "top_p", "dtype", "device"):
        if key in frame and frame[key].notna().any():
            values = sorted({str(v) for v in frame[key].dropna()})
            lines.append(f"- {key}: {', '.join(values)}")
    scalars = {k: v for k, v in config.items() if not isinstance(v, (dict, list))}
    if scalars:
        lines += ["", "Experiment config (`configs/experiment.yaml`, scalar fields):", "",
                  markdown_table(("field", "value"), sorted((k, v) for k, v in scalars.items()))]
    if manifest:
        versions = manifest.get("versions", {})
        rows = [(k, v) for k, v in manifest.items() if k != "versions" and not isinstance(v, (dict, list))]
        if isinstance(versions, dict) and versions:
            rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
        lines += ["", "Manifest (`configs/manifest.json`):", "", markdown_table(("field", "value"), rows)]
    else:
        lines.append("- no manifest found (`configs/manifest.json`)")
    return "\n".join(lines)


def _best_per_category(table: pd.DataFrame, entropy_strategies: Sequence[str], confidence: float) -> str:
    """Fastest speculative configuration (entspec or HF assisted) and fastest entropy rule per category."""
    rows = []
    candidates = table[~table["is_baseline"] & table["method_kind"].isin(["entspec", "hf_assisted"])]
    for category in ["all"] + sorted(c for c in table["category"].unique() if c != "all"):
        part = candidates[(candidates["category"] == category) & candidates["speedup"].notna()]
        if part.empty:
            rows.append((category, NA, NA, NA, NA, NA))
            continue
        best = part.loc[part["speedup"].idxmax()]
        entropy = part[part["strategy"].isin(entropy_strategies) & (part["method_kind"] == "entspec")]
        best_e = entropy.loc[entropy["speedup"].idxmax()] if not entropy.empty else None
        low = best["speedup_ci_low"]
        verdict = ("faster (CI above 1)" if finite(low) and low > 1 else
                   "slower (CI below 1)" if finite(best["speedup_ci_high"]) and best["speedup_ci_high"] < 1
                   else "not distinguishable")
        rows.append((category, best["method"], fmt_ci(best["speedup"], low, best["speedup_ci_high"]), verdict,
                     best_e["method"] if best_e is not None else NA,
                     fmt_ci(best_e["speedup"], best_e["speedup_ci_low"], best_e["speedup_ci_high"])
                     if best_e is not None else NA))
    ci = f"[{level_label(confidence)} CI]"
    return markdown_table(("category", "best speculative configuration", f"speedup {ci}", "vs baseline",
                           "best entropy configuration", f"its speedup {ci}"), rows)


def _tests(tests: pd.DataFrame, references: Mapping[str, str | None], alpha: float) -> str:
    missing = [label for label, method in references.items() if method is None]
    lines = []
    if missing:
        lines.append(f"No {' / '.join(missing)} in this experiment: those comparisons are skipped.")
    if tests.empty:
        lines.append("No paired tests (needs entropy-based configurations and a reference).")
        return "\n\n".join(lines)
    rows = [(r.method, f"{r.reference} (`{r.reference_method}`)", r.n_pairs, fmt(r.mean, 1), fmt(r.mean_other, 1),
             fmt(r.ratio), fmt(r.statistic, 1), fmt_p(r.p), fmt_p(r.p_holm), "yes" if r.significant else "no")
            for r in tests.itertuples()]
    n_valid = int(tests["p"].notna().sum())
    lines.append(
        f"Two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) of tokens/s, paired per prompt (seeds "
        f"averaged), Holm correction over all {n_valid} tests with a p-value "
        f"(`statsmodels.stats.multitest.multipletests`), alpha = {alpha}. Ratio = mean tok/s / reference mean "
        "tok/s. With n prompts the smallest two-sided exact p is 2 / 2^n, so few prompts cannot reach significance.")
    lines.append(markdown_table(("entropy configuration", "vs", "prompts", "tok/s", "reference tok/s", "ratio",
                                 "W", "p", "Holm p", "significant"), rows))
    return "\n\n".join(lines)


def _entropy_section(stats: pd.DataFrame, n_tokens: int) -> str:
    if stats.empty or n_tokens == 0:
        return "No drafted tokens with a per-round trace: nothing to relate entropy to."
    typed = [i for i in stats.index if i.startswith("entropy_")]
    stats = stats.loc[typed] if typed else stats  # "entropy" (the configured type) mixes types across methods
    rows = [(idx[len("entropy_"):] if idx.startswith("entropy_") else "configured", int(r["n"]),
             int(r["n_rejected"]), fmt(r["auroc_rejection"]), fmt(r["spearman_rho"]), fmt_p(r["spearman_p"]))
            for idx, r in stats.iterrows()]
    text = ("Tokens pooled over every entspec configuration; a round contributes its accepted tokens and its first "
            "rejected one (`entspec.metrics.token_table`). AUROC of entropy as a score for rejection (0.5 = no "
            "signal); Spearman rho of entropy with acceptance (negative = higher entropy, more rejections). "
            "Entropy-gated rules stop drafting at high entropy, so their tokens are a selected sample; fixed-k "
            "rows are not.")
    return text + "\n\n" + markdown_table(("entropy type", "tokens", "rejected", "AUROC", "Spearman rho", "p"), rows)


def _clustering_section(clusterings: Sequence[Clustering]) -> str:
    parts = []
    for c in clusterings:
        head = f"**{c.what.capitalize()}**"
        if c.skipped:
            parts.append(f"{head}: clustering skipped, {c.skipped}.")
            continue
        features = ", ".join(c.features.columns)
        text = [f"{head}: {len(c.features)} items on standardized ({features}); KMeans with k = {c.k} "
                f"(best silhouette {c.silhouette:.2f} over k = {', '.join(str(k) for k in c.silhouettes)})."]
        text += [f"- {d}" for d in c.descriptions]
        if c.left_out:
            text.append(f"- not clustered (a metric is missing, e.g. no per-round trace): {', '.join(c.left_out)}")
        parts.append("\n".join(text))
    return "\n\n".join(parts)


def _limitations(frame: pd.DataFrame, manifest: Mapping, baseline: str | None) -> str:
    items = []
    device = str(manifest.get("device", ""))
    if not device and "device" in frame:
        device = ", ".join(sorted({str(d) for d in frame["device"].dropna()}))
    if "cpu" in device.lower():
        items.append("Timings were taken on a CPU: wall-clock noise from other processes and thread scheduling "
                     "is large relative to small models' forward times; speedups need repeated runs to trust.")
    n_prompts = frame["prompt_id"].nunique()
    if n_prompts < 30:
        items.append(f"Only {n_prompts} prompts: bootstrap intervals are wide and the paired tests have little power.")
    if frame["seed"].nunique() < 2:
        items.append("One seed per prompt: run-to-run timing variance is not separated from prompt variance.")
    if "temperature" in frame and (frame["temperature"].fillna(0) == 0).all():
        items.append("Greedy decoding only: acceptance is deterministic; sampling-mode behaviour is not measured.")
    if frame["method_kind"].isin(["hf_generate", "hf_assisted"]).any():
        items.append("Hugging Face rows (hf_generate, hf_assisted) have no per-round trace: only call counters and "
                     "tokens/s; their acceptance rate, draft lengths and oracle gap are n/a, and their mean "
                     "accepted tokens is the realised new tokens per verifier call.")
    if "true_oracle_share" in frame and frame["true_oracle_share"].notna().any():
        items.append("true_oracle_share is the true oracle's time at the method's cap over the method's replayed "
                     "time on the prompt's trace (one cost model for both; docs/replay.md). The DISCO oracle_gap "
                     "beside it is conservative (it cannot extend fully accepted drafts) and overstates closeness.")
    elif frame["oracle_gap"].notna().any():
        items.append("The oracle gap uses a conservative DISCO oracle replayed on the trace (it cannot extend fully "
                     "accepted drafts), so it under-states the headroom of the stopping rule; record traces with "
                     "`entspec trace` for the true oracle.")
    missing = frame[~frame["is_baseline"] & frame["baseline_tokens_per_s"].isna()]
    if baseline is None:
        items.append("No baseline rows: no speedups.")
    elif len(missing):
        items.append(f"{len(missing)} generations have no baseline run on the same prompt and seed and are left "
                     "out of the speedups.")
    return "\n".join(f"- {item}" for item in items) or "- none noted"


@dataclass
class ReportInputs:
    """Everything ``final_report.md`` is made of (:func:`build_report`)."""

    title: str
    experiment_dir: str
    config: Mapping  # configs/experiment.yaml
    manifest: Mapping  # configs/manifest.json
    frame: pd.DataFrame  # processed_data: one row per generation
    table: pd.DataFrame  # entspec.analysis.stats.method_table
    baseline: str | None
    tests: pd.DataFrame  # entspec.analysis.stats.paired_tests
    references: Mapping[str, str | None]  # label -> reference method of the paired tests
    entropy_stats: pd.DataFrame  # EntropyAcceptance.stats
    n_tokens: int  # drafted tokens behind entropy_stats
    clusterings: Sequence[Clustering]
    figures: Mapping[str, str]  # name -> file name
    entropy_strategies: Sequence[str]
    alpha: float
    confidence: float
    n_resamples: int
    damaged_lines: Sequence[int] = ()  # results.jsonl lines skipped on request
    curves: pd.DataFrame | None = None  # entspec.analysis.curves.threshold_curves (None: no traces)


def build_report(inputs: ReportInputs) -> str:
    """The whole ``final_report.md``."""
    r = inputs
    sections = [
        f"# {r.title}",
        "## Setup\n\n" + _setup(r.experiment_dir, r.config, r.manifest, r.frame, r.baseline, r.damaged_lines),
        "## Summary (all prompts)\n\n" + _method_notes(r.confidence, r.n_resamples) + "\n\n"
        + category_table(r.table, "all", r.confidence),
        "## Results per category (Spec-Bench style)\n\n" + _per_category(r.table, r.confidence),
        "## Best configuration per category\n\n" + _best_per_category(r.table, r.entropy_strategies, r.confidence),
        "## Paired tests: entropy configurations vs best fixed k and HF assisted generation\n\n"
        + _references_line(r.references) + "\n\n" + _tests(r.tests, r.references, r.alpha),
        *(["## Replay on the traces\n\n" + _replay_section(r.curves)] if r.curves is not None else []),
        "## Does entropy predict rejection?\n\n" + _entropy_section(r.entropy_stats, r.n_tokens),
        "## Performance clustering\n\n" + _clustering_section(r.clusterings),
        "## Figures\n\n" + "\n\n".join(f"### {name}\n\n![{name}]({path})" for name, path in r.figures.items()),
        "## Limitations\n\n" + _limitations(r.frame, r.manifest, r.baseline),
    ]
    return "\n\n".join(sections) + "\n"


def _replay_section(curves: pd.DataFrame) -> str:
    """Per replayed curve: its speed at the experiment's thresholds and at the best threshold on the curve."""
    if curves.empty:
        return "No method of this experiment could be replayed on its traces (sampling, or a cap beyond theirs)."
    rows = []
    for (strategy, line), curve in curves.groupby(["strategy", "line"], sort=True):
        best = curve.loc[curve["speedup"].idxmax()]
        at = curve[curve["measured"]]
        rows.append((strategy, line or "-", ", ".join(f"{v:g}: {x:.2f}x" for v, x in zip(at["value"], at["speedup"]))
                     or NA, f"{best['value']:.3g}", fmt(best["speedup"], 2), fmt(best["of_oracle"], 2)))
    return (f"Each rule replayed on this experiment's traces (`traces/`, greedy; `entspec.replay`) along its threshold "
            f"parameter, the other parameters as in the experiment (`replay_curves.csv`; the curves of "
            f"`comparison_analysis.png`). Speedups are over plain decoding under the traces' cost model; the true "
            f"oracle reaches {curves['oracle_speedup'].iloc[0]:.2f}x.\n\n"
            + markdown_table(("rule", "setting", "replayed speedup at the experiment's threshold", "best threshold on "
                              "the curve", "its speedup", "its share of the true oracle (no cap)"), rows))


def _method_notes(confidence: float, n_resamples: int) -> str:
    return (
        f"Each prompt is one unit: seeds are averaged within a prompt, then values are means over prompts with a "
        f"{level_label(confidence)} bootstrap interval ({n_resamples} resamples of prompts, BCa; "
        "`entspec.metrics.bootstrap_ci`). "
        "Speedup = mean tokens/s / mean baseline tokens/s over the prompts of the category (Spec-Bench), interval "
        "from a paired bootstrap. Mean accepted tokens = tokens per verifier call (1 + accepted drafts per call; "
        "for HF rows the realised new tokens per call). Per-generation values: `processed_data.csv`.")


def _per_category(table: pd.DataFrame, confidence: float) -> str:
    categories = sorted(c for c in table["category"].unique() if c != "all")
    return "\n\n".join(f"### Category: {c}\n\n" + category_table(table, c, confidence) for c in categories)


def _references_line(references: Mapping[str, str | None]) -> str:
    return "References: " + ", ".join(f"{k} = `{v}`" if v else f"{k} = none" for k, v in references.items())


def best_row(table: pd.DataFrame, mask: pd.Series) -> pd.Series | None:
    """Row of ``table`` (category "all") with the highest speedup (tokens/s when no speedup) under ``mask``."""
    part = table[(table["category"] == "all") & mask]
    if part.empty:
        return None
    column = "speedup" if part["speedup"].notna().any() else "tokens_per_s"
    return part.loc[part[column].fillna(-np.inf).idxmax()]
