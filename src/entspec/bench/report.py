"""The benchmark's markdown: per-category speedups with CIs, acceptance, the time split, the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..metrics import ComparativeEvaluator, load_rows, summarize
from ..metrics.compare import fmt, fmt_ci
from ..rules import RULES

BASELINE = "hf_generate"


def bench_tables(experiment_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Per-method comparison with HF `generate` (per category and overall) and the time split."""
    rows = load_rows(Path(experiment_dir) / "results" / "results.jsonl")
    baseline = [r for r in rows if r.method == BASELINE]
    if not baseline:
        raise ValueError(f"{experiment_dir}: no {BASELINE} rows to compare with")
    per_gen = summarize(rows)
    speed = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        table = ComparativeEvaluator(mine, baseline).summary(n_resamples=2000)
        table.insert(0, "method", method)
        table.insert(1, "strategy", mine[0].strategy)
        speed.append(table)
    speed = pd.concat(speed, ignore_index=True)
    pooled = per_gen.groupby("method").agg(
        drafted=("drafted_tokens", "sum"), accepted=("accepted_tokens", "sum"),
        tokens=("new_tokens", "sum"), calls=("verifier_calls", "sum"), drafter_calls=("drafter_calls", "sum"),
        draft_s=("draft_time_s", "sum"), verify_s=("verify_time_s", "sum"), overhead_s=("overhead_time_s", "sum"),
        prefill_s=("prefill_time_s", "sum"), wall_s=("wall_time_s", "sum"), ttft_s=("time_to_first_token_s", "mean"))
    pooled["acceptance_rate"] = pooled.accepted / pooled.drafted.replace(0, np.nan)
    pooled["tokens_per_call"] = pooled.tokens / pooled.calls
    pooled["ms_per_draft_step"] = 1000 * pooled.draft_s / pooled.drafter_calls.replace(0, np.nan)
    pooled["ms_per_verifier_call"] = 1000 * pooled.verify_s / pooled.calls
    by_cat = per_gen.groupby(["method", "category"]).agg(
        drafted=("drafted_tokens", "sum"), accepted=("accepted_tokens", "sum"), tokens=("new_tokens", "sum"),
        calls=("verifier_calls", "sum"), ttft_s=("time_to_first_token_s", "mean"))
    by_cat["acceptance_rate"] = by_cat.accepted / by_cat.drafted.replace(0, np.nan)
    by_cat["tokens_per_call"] = by_cat.tokens / by_cat.calls
    return {"speed": speed, "pooled": pooled.reset_index(), "by_category": by_cat.reset_index()}


def bench_markdown(experiment_dir: str | Path, command: str, other_setting: list[str] = ()) -> str:
    exp = Path(experiment_dir)
    tables = bench_tables(exp)
    speed, pooled, by_cat = tables["speed"], tables["pooled"].set_index("method"), tables["by_category"]
    manifest = json.loads((exp / "configs" / "manifest.json").read_text())
    sampled = float(yaml.safe_load((exp / "configs" / "experiment.yaml").read_text()).get("temperature", 0)) > 0
    v = manifest["versions"]
    lines = [f"### {manifest['experiment_name']} ({manifest.get('dtype', '?')})", "",
             f"- command: `{command}`",
             f"- machine: {manifest['device']}; {manifest['platform']}",
             f"- versions: entspec {v.get('entspec')} ({manifest['git_hash'][:12]}), torch {v.get('torch')}, "
             f"transformers {v.get('transformers')}; date {manifest['date']}",
             f"- prompts: {', '.join(manifest['prompts'])}",
             *(f"- methods tuned for another setting: {note}" for note in other_setting), ""]
    categories = [c for c in speed.category.unique() if c != "all"] + ["all"]
    for category in categories:
        part = speed[speed.category == category].sort_values("speedup", ascending=False)
        cat_stats = by_cat[by_cat.category == category].set_index("method") if category != "all" else pooled
        lines += [f"**{category}** ({int(part.n_pairs.max())} prompts) — speedup = mean tokens/s (prefill "
                  f"included) over mean tokens/s of HF `generate` on the same prompts, 95% paired bootstrap CI; "
                  f"TTFT = mean time to the first new token", "",
                  "| method | tokens/s | speedup [95% CI] | TTFT s | acceptance | tokens / verifier call | same output |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            acc = cat_stats.acceptance_rate.get(r.method, np.nan)
            tpc = cat_stats.tokens_per_call.get(r.method, np.nan)
            ttft = cat_stats.ttft_s.get(r.method, np.nan)
            speedup = fmt_ci(r.speedup, r.speedup_ci_low, r.speedup_ci_high, 2)
            lines.append(f"| {r.method} | {fmt(r.mean_tokens_per_s, 2)} | {speedup} | {fmt(ttft, 2)} | "
                         f"{fmt(acc, 2)} | {fmt(tpc, 2)} | {fmt(r.output_match_rate, 2)} |")
        lines.append("")
    lines += ["**Where the time goes** (summed over all prompts; overhead = round time − drafter − verifier; a "
              "deferred drafter prefill is drafter time, so it counts in ms / draft step)", "",
              "| method | drafter s | verifier s | overhead s | prefill s | ms / draft step | ms / verifier call |",
              "|---|---|---|---|---|---|---|"]
    for method, r in pooled.iterrows():
        if r.calls and np.isfinite(r.verify_s) and r.verify_s > 0:
            lines.append(f"| {method} | {fmt(r.draft_s, 2)} | {fmt(r.verify_s, 2)} | {fmt(r.overhead_s, 3)} | "
                         f"{fmt(r.prefill_s, 2)} | {fmt(r.ms_per_draft_step, 0)} | {fmt(r.ms_per_verifier_call, 0)} |")
    variance = seed_variance(exp)
    if variance is not None:
        lines += ["", "**Seed vs prompt variance** of the per-generation speedup (sampling: several seeds per "
                  "prompt, paired across methods): sd across seeds within a prompt (mean over prompts) and sd "
                  "across prompts of the per-prompt mean", "", "| method | seeds | sd within prompt | sd across "
                  "prompts |", "|---|---|---|---|"]
        for method, r in variance.iterrows():
            lines.append(f"| {method} | {int(r.seeds)} | {fmt(r.within_sd, 3)} | {fmt(r.between_sd, 3)} |")
    replayed = replay_table(exp)
    if replayed is not None:
        oracle = "sampling oracle" if sampled else "true oracle"
        how = ("sampling traces; predicted = the expected-value replay's time (a mean over realisations, "
               "docs/replay.md); exact rounds do not apply; share of the sampling oracle = its expected time at "
               "the method's cap / the replayed time: not a bound, it can exceed 1" if sampled else
               "predicted = the cost model's time for the replayed rounds; exact = share of generations whose "
               "rounds the replay reproduces; share of the true oracle = oracle time at the method's cap / replayed "
               "time")
        lines += ["", f"**Replay check** (traces of the same prompts, `entspec trace`; {how}; mean over prompts)",
                  "", "| method | measured tokens/s | predicted tokens/s | predicted / measured | exact rounds | "
                  f"share of {oracle} (cap) | (uncapped) |", "|---|---|---|---|---|---|---|"]
        for method, r in replayed.iterrows():
            lines.append(f"| {method} | {fmt(r.measured, 2)} | {fmt(r.predicted, 2)} | {fmt(r.predicted / r.measured, 3)}"
                         f" | {fmt(r.exact, 2)} | {fmt(r.share, 3)} | {fmt(r.share_uncapped, 3)} |")
    lines += ["", *targets(speed, None if sampled else replayed,
                           by_cat.set_index(["method", "category"]).ttft_s), ""]
    return "\n".join(lines)


def seed_variance(experiment_dir: str | Path) -> pd.DataFrame | None:
    """Per method: sd of the speedup across seeds within a prompt vs across prompts (None with one seed)."""
    rows = load_rows(Path(experiment_dir) / "results" / "results.jsonl")
    if len({r.seed for r in rows}) < 2:
        return None
    baseline = [r for r in rows if r.method == BASELINE]
    out = {}
    for method in dict.fromkeys(r.method for r in rows):
        if method == BASELINE:
            continue
        pairs = ComparativeEvaluator([r for r in rows if r.method == method], baseline).per_prompt()
        by_prompt = pairs.groupby("prompt_id").speedup
        out[method] = {"seeds": pairs.groupby("prompt_id").size().max(), "within_sd": by_prompt.std().mean(),
                       "between_sd": by_prompt.mean().std()}
    return pd.DataFrame.from_dict(out, orient="index").astype(float)


def replay_table(experiment_dir: str | Path) -> pd.DataFrame | None:
    """Per entspec method: measured vs predicted tokens/s, replay exactness, share of the true oracle."""
    from ..replay.compare import trace_columns

    rows = load_rows(Path(experiment_dir) / "results" / "results.jsonl")
    columns = trace_columns(experiment_dir, [r.as_mapping() for r in rows])
    if columns is None:
        return None
    frame = pd.DataFrame({"method": [r.method for r in rows], "tokens": [len(r.result.new_tokens) for r in rows],
                          "wall": [r.result.wall_time_s for r in rows], **columns})
    frame = frame[frame.predicted_tokens_per_s.notna()]
    frame["predicted_s"] = frame.tokens / frame.predicted_tokens_per_s
    out = frame.groupby("method", sort=False).agg(
        tokens=("tokens", "sum"), wall=("wall", "sum"), predicted_s=("predicted_s", "sum"),
        exact=("replay_exact", "mean"), share=("true_oracle_share", "mean"),
        share_uncapped=("true_oracle_share_uncapped", "mean"))
    out["measured"] = out.tokens / out.wall
    out["predicted"] = out.tokens / out.predicted_s
    return out


LONG_PROMPT_TARGETS = {"rag": 1.15, "summarization": 1.3}  # issue 24: best entspec method / plain decoding
TTFT_TARGET = 1.15  # issue 24: its time to first token / plain decoding's


def targets(speed: pd.DataFrame, replayed: pd.DataFrame | None = None,
            ttft: pd.Series | None = None) -> list[str]:
    """The targets: entspec autoregressive >= 0.97x HF generate; the best rule that is not fixed k >= 1.10x HF
    assisted (defaults) and >= 1.05x the best fixed k; its share of the true oracle >= 0.85 (with greedy traces: the
    sampling oracle is not a bound, so no target reads it). Every line also gives the best rule against plain
    decoding, so a target met against HF assisted generation cannot hide a rule slower than not speculating. On
    RAG and summarization prompts, the long-prompt targets: the best entspec method >= 1.15x / 1.3x HF generate,
    its TTFT (``ttft``: mean seconds by (method, category)) within 1.15x of HF generate's."""
    out = ["**Targets**", ""]
    cat = speed.set_index(["method", "category"])
    for category in speed.category.unique():
        ar = cat.loc[("autoregressive", category), "speedup"]
        hfa = cat.speedup.get(("hf_assisted[default]", category), np.nan)
        part = speed[speed.category == category]
        rules = part[part.strategy.isin([s for s in RULES if s != "fixed"])]
        fixed = part[part.strategy == "fixed"]
        best = rules.loc[rules.speedup.idxmax()] if len(rules) else None
        line = f"- {category}: entspec autoregressive / HF generate = {fmt(ar, 3)} (target ≥ 0.97: " \
               f"{'met' if ar >= 0.97 else 'missed'})"
        if best is not None:
            line += f"; best rule {best.method} / HF generate = {fmt(best.speedup, 2)}" + \
                    (" (slower than plain decoding)" if best.speedup < 1 else "")
            if np.isfinite(hfa):
                ratio = best.speedup / hfa
                line += f"; / HF assisted defaults = {fmt(ratio, 2)} (target ≥ 1.10: " \
                        f"{'met' if ratio >= 1.10 else 'missed'})"
            if len(fixed):
                top_fixed = fixed.loc[fixed.speedup.idxmax()]
                ratio = best.speedup / top_fixed.speedup
                line += f"; / best fixed k {top_fixed.method} = {fmt(ratio, 2)} (target ≥ 1.05: " \
                        f"{'met' if ratio >= 1.05 else 'missed'})"
            if replayed is not None and category == "all" and best.method in replayed.index:
                share = replayed.loc[best.method, "share"]
                line += f"; share of the true oracle = {fmt(share, 2)} (target ≥ 0.85: " \
                        f"{'met' if share >= 0.85 else 'missed'})"
        if category in LONG_PROMPT_TARGETS:
            line += long_prompt_target(part, category, ttft)
        out.append(line)
    return out


def long_prompt_target(part: pd.DataFrame, category: str, ttft: pd.Series | None) -> str:
    """Issue 24's line for one long-prompt category: the fastest entspec method against plain decoding, and its
    time to first token against plain decoding's."""
    ours = part[~part.strategy.isin(["hf_generate", "hf_assisted"])]
    if not len(ours):
        return ""
    top = ours.loc[ours.speedup.idxmax()]
    goal = LONG_PROMPT_TARGETS[category]
    line = f"; best entspec method {top.method} / HF generate = {fmt(top.speedup, 2)} (long-prompt target ≥ " \
           f"{goal}: {'met' if top.speedup >= goal else 'missed'})"
    if ttft is not None and (top.method, category) in ttft.index and (BASELINE, category) in ttft.index:
        ratio = ttft[(top.method, category)] / ttft[(BASELINE, category)]
        line += f", its TTFT / HF generate's = {fmt(ratio, 2)} (target ≤ {TTFT_TARGET}: " \
                f"{'met' if ratio <= TTFT_TARGET else 'missed'})"
    return line
