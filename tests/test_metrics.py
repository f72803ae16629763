"""Metrics on hand-built traces with known answers, a JSONL round trip, paired comparison, theory,
and the theory against the engine on two context-free tiny models with known p and q."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entspec.metrics import (
    GENERATION_METRIC_NAMES,
    ComparativeEvaluator,
    SpeculativeDecodingEvaluator,
    accept_counts,
    acceptance_by_bin,
    acceptance_from_distributions,
    bootstrap_ci,
    draft_length_distribution,
    entropy_acceptance,
    expected_accepted,
    expected_speedup,
    expected_tokens_per_call,
    generation_metrics,
    optimal_gamma,
    oracle_bound,
    paired_bootstrap_ci,
    per_position_acceptance,
    pooled_metrics,
    stop_reason_counts,
    token_table,
)
from entspec.records import GenerationResult, ResultRow, RoundRecord, append_jsonl, read_jsonl
from tiny import context_free_gpt2


def rnd(drafted, accepted, emitted, entropies, stop, draft_t, verify_t, round_t, accept_probs=None):
    """A RoundRecord with the three entropy types derived from ``entropies`` (renyi = 2H, topk = 1 − H)."""
    return RoundRecord(
        drafted=drafted, accepted=accepted, emitted=emitted, entropies=list(entropies), stop_reason=stop,
        draft_time_s=draft_t, verify_time_s=verify_t, round_time_s=round_t,
        draft_token_probs=[0.5] * drafted,
        accept_probs=list(accept_probs) if accept_probs is not None else [],
        entropies_by_type={"shannon": list(entropies), "renyi": [2 * h for h in entropies],
                           "topk": [1 - h for h in entropies]},
        threshold=0.7,
    )


def greedy_trace() -> GenerationResult:
    """Four rounds, 9 tokens; prefill 50 ms; overhead 10 ms per round; every derived number is worked out
    by hand in the tests below."""
    rounds = [
        rnd(4, 2, 3, [0.1, 0.2, 0.9, 0.5], "max_draft_len", 0.04, 0.02, 0.07, [1, 1, 0, 1]),
        rnd(3, 3, 4, [0.1, 0.15, 0.3], "criterion", 0.03, 0.02, 0.06, [1, 1, 1]),
        rnd(2, 0, 1, [0.8, 0.2], "criterion", 0.02, 0.02, 0.05, [0, 1]),
        rnd(0, 0, 1, [], "criterion", 0.0, 0.02, 0.03, []),
    ]
    return GenerationResult(new_tokens=list(range(9)), rounds=rounds, prompt_len=5, wall_time_s=0.26,
                            prefill_time_s=0.05, time_to_first_token_s=0.12, finish_reason="length")


def autoregressive_trace(n: int = 5, step: float = 0.02) -> GenerationResult:
    rounds = [rnd(0, 0, 1, [], "none", 0.0, step, step) for _ in range(n)]
    return GenerationResult(new_tokens=[1] * n, rounds=rounds, prompt_len=3, wall_time_s=n * step,
                            prefill_time_s=0.0, time_to_first_token_s=step, finish_reason="length",
                            method="autoregressive")


# ---------------------------------------------------------------------------------------- per generation

def test_generation_metrics_counts_and_rates():
    m = generation_metrics(greedy_trace())
    assert set(GENERATION_METRIC_NAMES) == set(m)
    assert m["new_tokens"] == 9 and m["verifier_calls"] == 4
    assert m["drafted_tokens"] == m["drafter_calls"] == 9
    assert m["accepted_tokens"] == 5 and m["wasted_draft_tokens"] == 4
    assert m["acceptance_rate"] == pytest.approx(5 / 9)
    assert m["mean_accepted_tokens"] == pytest.approx(1 + 5 / 4)
    assert m["tokens_per_verifier_call"] == pytest.approx(9 / 4)
    assert m["mean_draft_length"] == pytest.approx(9 / 4)
    assert m["tokens_per_s"] == pytest.approx(9 / 0.26)
    assert m["time_to_first_token_s"] == pytest.approx(0.12)


def test_latency_percentiles_are_over_tokens():
    m = generation_metrics(greedy_trace())
    # per-token ms: 70/3 x3, 60/4 x4, 50 x1, 30 x1 -> sorted 15,15,15,15,23.3,23.3,23.3,30,50
    assert m["latency_p50_ms"] == pytest.approx(70 / 3)
    assert m["latency_p90_ms"] == pytest.approx(30 + 0.2 * 20)  # linear, rank 7.2
    assert m["latency_p99_ms"] == pytest.approx(30 + 0.92 * 20)
    assert m["round_latency_mean_ms"] == pytest.approx(52.5)
    assert m["round_latency_p50_ms"] == pytest.approx(55.0)
    assert m["round_latency_p90_ms"] == pytest.approx(67.0)


def test_time_split():
    m = generation_metrics(greedy_trace())
    assert m["prefill_time_s"] == pytest.approx(0.05)
    assert m["draft_time_s"] == pytest.approx(0.09)
    assert m["verify_time_s"] == pytest.approx(0.08)
    assert m["overhead_time_s"] == pytest.approx(0.04)
    assert m["draft_time_frac"] == pytest.approx(0.09 / 0.21)
    assert m["verify_time_frac"] == pytest.approx(0.08 / 0.21)
    assert m["overhead_time_frac"] == pytest.approx(0.04 / 0.21)


def test_distributions_of_rounds():
    res = greedy_trace()
    assert per_position_acceptance(res) == pytest.approx([2 / 3, 2 / 3, 1 / 2, 0.0])
    assert draft_length_distribution(res) == {4: 1, 3: 1, 2: 1, 0: 1}
    assert stop_reason_counts(res) == {"criterion": 3, "max_draft_len": 1}
    assert accept_counts(res) == [2, 0, 1, 1, 0]
    # several generations pool their rounds
    assert accept_counts([res, res]) == [4, 0, 2, 2, 0]


def test_autoregressive_trace():
    m = generation_metrics(autoregressive_trace())
    assert math.isnan(m["acceptance_rate"])
    assert m["mean_accepted_tokens"] == 1.0 and m["tokens_per_verifier_call"] == 1.0
    assert m["drafter_calls"] == 0 and m["mean_draft_length"] == 0.0
    assert m["tokens_per_s"] == pytest.approx(50.0)
    assert per_position_acceptance(autoregressive_trace()) == []
    assert accept_counts(autoregressive_trace()) == [5]


def test_truncated_round_separates_accepted_and_realised_tokens():
    # the budget cut a fully accepted draft of 4 to 2 emitted tokens
    res = GenerationResult(new_tokens=[1, 2], rounds=[rnd(4, 4, 2, [0.1] * 4, "max_draft_len", .04, .01, .05)],
                           prompt_len=1, wall_time_s=0.05, prefill_time_s=0.0, time_to_first_token_s=0.05,
                           finish_reason="length")
    m = generation_metrics(res)
    assert m["mean_accepted_tokens"] == 5.0 and m["tokens_per_verifier_call"] == 2.0


def test_traceless_generation_uses_counters():
    if "counters" not in GenerationResult.__dataclass_fields__:
        pytest.skip("GenerationResult has no counters field")
    res = GenerationResult(new_tokens=[1] * 12, rounds=[], prompt_len=2, wall_time_s=0.3, prefill_time_s=0.05,
                           time_to_first_token_s=0.1, finish_reason="length", method="hf_assisted",
                           counters={"verifier_calls": 4, "drafter_calls": 15})
    m = generation_metrics(res)
    assert m["verifier_calls"] == 4 and m["drafter_calls"] == 15
    assert m["tokens_per_verifier_call"] == m["mean_accepted_tokens"] == 3.0
    assert m["tokens_per_s"] == pytest.approx(40.0)
    assert math.isnan(m["acceptance_rate"]) and math.isnan(m["latency_p50_ms"])


def test_pooled_metrics_are_ratios_of_sums():
    a, b = greedy_trace(), autoregressive_trace()
    m = pooled_metrics([a, b])
    assert m["acceptance_rate"] == pytest.approx(5 / 9)
    assert m["tokens_per_s"] == pytest.approx(14 / 0.36)
    assert m["verifier_calls"] == 9
    assert pooled_metrics([a]) == generation_metrics(a)


@st.composite
def traces(draw) -> GenerationResult:
    """Random but consistent traces: accepted ≤ drafted, emitted = accepted + 1, times ≥ 0."""
    rounds = []
    for _ in range(draw(st.integers(1, 12))):
        d = draw(st.integers(0, 6))
        a = draw(st.integers(0, d))
        dt, vt, ot = (draw(st.floats(1e-4, 0.1)) for _ in range(3))
        hs = [draw(st.floats(0, 5)) for _ in range(d)]
        rounds.append(rnd(d, a, a + 1, hs, "criterion", dt, vt, dt + vt + ot, [1.0] * a + [0.0] * (d - a)))
    n = sum(r.emitted for r in rounds)
    prefill = draw(st.floats(0, 0.1))
    wall = prefill + sum(r.round_time_s for r in rounds)
    return GenerationResult(new_tokens=[0] * n, rounds=rounds, prompt_len=1, wall_time_s=wall,
                            prefill_time_s=prefill, time_to_first_token_s=prefill + rounds[0].round_time_s,
                            finish_reason="length")


@settings(max_examples=60, deadline=None)
@given(traces())
def test_invariants_on_random_traces(res):
    m = generation_metrics(res)
    assert m["draft_time_frac"] + m["verify_time_frac"] + m["overhead_time_frac"] == pytest.approx(1.0)
    assert m["mean_accepted_tokens"] == pytest.approx(m["tokens_per_verifier_call"])  # nothing truncated
    assert sum(accept_counts(res)) == m["verifier_calls"]
    assert all(0.0 <= v <= 1.0 for v in per_position_acceptance(res))
    o = oracle_bound(res)
    assert o["oracle_gap"] <= 1.0 + 1e-9
    assert o["achieved_tokens_per_s"] == pytest.approx(m["tokens_per_s"])  # default costs = measured time
    assert o["achieved_expected_tokens_per_call"] == pytest.approx(m["mean_accepted_tokens"])
    assert len(token_table(res)) == sum(min(r.accepted + 1, r.drafted) for r in res.rounds)


# -------------------------------------------------------------------------------- entropy vs acceptance

def test_token_table_keeps_positions_judged_in_sequence():
    table = token_table(greedy_trace())
    # round 1: positions 0,1 accepted, 2 rejected (3 dropped); round 2: 0..2 accepted; round 3: 0 rejected
    assert list(zip(table["round"], table["position"], table["accepted"])) == [
        (0, 0, True), (0, 1, True), (0, 2, False), (1, 0, True), (1, 1, True), (1, 2, True), (2, 0, False)]
    expected = {"entropy", "entropy_shannon", "entropy_renyi", "entropy_topk", "draft_prob", "accept_prob"}
    assert expected <= set(table)


def test_entropy_separates_rejections_perfectly():
    ea = entropy_acceptance(greedy_trace(), bins=2)
    stats = ea.stats
    # rejected tokens have entropies 0.9, 0.8; accepted ones at most 0.3
    assert stats.loc["entropy", "auroc_rejection"] == 1.0
    assert stats.loc["entropy_renyi", "auroc_rejection"] == 1.0
    assert stats.loc["entropy_topk", "auroc_rejection"] == 0.0  # 1 − H ranks the other way
    assert stats.loc["entropy", "spearman_rho"] < 0 < stats.loc["entropy_topk", "spearman_rho"]
    assert stats.loc["entropy", "n"] == 7 and stats.loc["entropy", "n_rejected"] == 2
    assert stats.loc["entropy", "spearman_rho_accept_prob"] < 0
    bins = ea.bins["entropy"]
    assert bins["n"].sum() == 7
    assert bins["acceptance_rate"].iloc[0] == 1.0 and bins["acceptance_rate"].iloc[-1] < 1.0
    assert (bins["ci_low"] <= bins["acceptance_rate"]).all() and (bins["acceptance_rate"] <= bins["ci_high"]).all()


def test_entropy_acceptance_degenerate_cases():
    all_accepted = GenerationResult(new_tokens=[1] * 4, rounds=[rnd(3, 3, 4, [0.1, 0.2, 0.3], "criterion",
                                                                    .03, .01, .04, [1, 1, 1])],
                                    prompt_len=1, wall_time_s=.04, prefill_time_s=0.0,
                                    time_to_first_token_s=.04, finish_reason="length")
    stats = entropy_acceptance(all_accepted).stats
    assert math.isnan(stats.loc["entropy", "auroc_rejection"])
    assert math.isnan(stats.loc["entropy", "spearman_rho"])
    empty = entropy_acceptance(autoregressive_trace())
    assert empty.tokens.empty and empty.stats.loc["entropy", "n"] == 0
    assert acceptance_by_bin(empty.tokens).empty


def test_fixed_bins_with_edges():
    table = token_table(greedy_trace())
    bins = acceptance_by_bin(table, bins=[0.0, 0.5, 1.0], binning="fixed")
    assert bins["n"].tolist() == [5, 2] and bins["acceptance_rate"].tolist() == [1.0, 0.0]


# ------------------------------------------------------------------------------------------------ oracle

def test_oracle_bound_greedy_trace():
    o = oracle_bound(greedy_trace())
    # measured costs: 10 ms per drafter step, 20 ms per verifier call, 10 ms overhead per round
    assert o["draft_step_s"] == pytest.approx(0.01)
    assert o["verify_call_s"] == pytest.approx(0.02)
    assert o["overhead_call_s"] == pytest.approx(0.01)
    # oracle drafts 2 + 3 + 0 + 0 = 5 tokens instead of 9; same 4 calls and 9 tokens
    assert o["oracle_drafted_tokens"] == 5 and o["drafted_tokens"] == 9
    assert o["achieved_tokens_per_s"] == pytest.approx(9 / 0.26)
    assert o["measured_tokens_per_s"] == pytest.approx(9 / 0.26)
    assert o["oracle_tokens_per_s"] == pytest.approx(9 / 0.22)
    assert o["oracle_gap"] == pytest.approx(0.22 / 0.26)
    assert o["achieved_tokens_per_call"] == o["oracle_tokens_per_call"] == pytest.approx(9 / 4)
    assert o["achieved_expected_tokens_per_call"] == pytest.approx(1 + 5 / 4)  # greedy: = realised
    assert o["unresolved_round_frac"] == 0.5  # rounds 2 and 4 were fully accepted


def test_oracle_bound_explicit_costs_and_truncation():
    o = oracle_bound(greedy_trace(), draft_step_s=0.02, verify_call_s=0.1, overhead_call_s=0.0)
    assert o["achieved_tokens_per_s"] == pytest.approx(9 / (0.05 + 9 * 0.02 + 4 * 0.1))
    assert o["oracle_tokens_per_s"] == pytest.approx(9 / (0.05 + 5 * 0.02 + 4 * 0.1))
    # a budget-truncated round: 4 accepted but only 2 emitted -> the oracle drafts 1
    cut = GenerationResult(new_tokens=[1, 2], rounds=[rnd(4, 4, 2, [0.1] * 4, "max_draft_len", .04, .01, .05)],
                           prompt_len=1, wall_time_s=0.05, prefill_time_s=0.0, time_to_first_token_s=.05,
                           finish_reason="length")
    assert oracle_bound(cut)["oracle_drafted_tokens"] == 1
    # autoregressive: nothing to save
    assert oracle_bound(autoregressive_trace())["oracle_gap"] == pytest.approx(1.0)


def test_expected_accepted_sampling():
    assert expected_accepted([0.5, 0.5]) == pytest.approx(0.75)
    assert expected_accepted([1.0, 1.0, 0.0, 1.0]) == 2.0
    assert expected_accepted([]) == 0.0


# ------------------------------------------------------------------------------ JSONL round trip / evaluator

def test_jsonl_round_trip_matches_in_memory(tmp_path):
    path = tmp_path / "runs.jsonl"
    results = [greedy_trace(), autoregressive_trace()]
    for i, res in enumerate(results):
        append_jsonl(path, ResultRow(method="fixed-4", method_kind="entspec", strategy="fixed",
                                     params={"max_draft_len": 4}, prompt_id=f"p{i}", category="qa", seed=0,
                                     config={"strategy": "fixed", "sampling": {"temperature": 0.0}}, result=res))
    from_disk = SpeculativeDecodingEvaluator(path)
    in_memory = SpeculativeDecodingEvaluator(results)
    a, b = from_disk.per_generation(), in_memory.per_generation()
    for name in GENERATION_METRIC_NAMES:
        np.testing.assert_allclose(a[name].to_numpy(float), b[name].to_numpy(float), equal_nan=True)
    assert a["prompt_id"].tolist() == ["p0", "p1"] and a["config.sampling.temperature"].tolist() == [0.0, 0.0]
    assert from_disk.oracle() == in_memory.oracle()
    assert from_disk.per_position_acceptance() == in_memory.per_position_acceptance()
    # rows read back are accepted as well as paths
    assert SpeculativeDecodingEvaluator(list(read_jsonl(path))).per_generation()["new_tokens"].tolist() == [9, 5]


def test_result_row_round_trips_through_jsonl_and_pandas(tmp_path):
    import pandas as pd

    from entspec.records import SCHEMA_VERSION, read_rows

    path = tmp_path / "results.jsonl"
    rows = [ResultRow(method="fixed[max_draft_len=4]", method_kind="entspec", strategy="fixed",
                      params={"strategy": "fixed", "max_draft_len": 4}, prompt_id="p0", category="qa", seed=3,
                      config={"strategy": "fixed", "max_draft_len": 4, "temperature": 0.0}, result=greedy_trace(),
                      unit_key="fixed[max_draft_len=4]|p0|3"),
            ResultRow(method="autoregressive", method_kind="autoregressive", strategy="autoregressive",
                      prompt_id="p0", category="qa", seed=3, config={"temperature": 0.0},
                      result=autoregressive_trace(), unit_key="autoregressive|p0|3",
                      worker={"host": "h", "device": "cpu", "pid": 7}, extra={"note": "hand-added"})]
    for row in rows:
        append_jsonl(path, row)
    assert list(read_rows(path)) == rows  # typed rows back, field for field
    frame = pd.read_json(path, lines=True, precise_float=True)  # flat JSON: one column per field
    assert {"schema_version", "unit_key", "method", "method_kind", "strategy", "params", "prompt_id", "category",
            "seed", "worker", "note", "config", "result"} == set(frame.columns)
    assert frame["schema_version"].tolist() == [SCHEMA_VERSION] * 2 and frame["seed"].tolist() == [3, 3]
    assert frame["params"][0] == {"strategy": "fixed", "max_draft_len": 4} and frame["params"][1] == {}
    records = [{k: v for k, v in r.items() if not (k in ("worker", "note") and not isinstance(v, (dict, str)))}
               for r in frame.to_dict("records")]  # a column absent from a row reads back as NaN
    assert [ResultRow.from_json(r) for r in records] == rows
    assert rows[0].params_text == "max_draft_len=4" and rows[1].params_text == ""


def test_schema_1_rows_load_with_the_keys_filled():
    from entspec.records import upgrade_row

    written = ResultRow(method="absolute[theta_abs=0.5]", method_kind="entspec", strategy="absolute",
                        params={"strategy": "absolute", "theta_abs": 0.5}, prompt_id="p1", category="code", seed=2,
                        config={"strategy": "absolute", "theta_abs": 0.5}, result=greedy_trace(),
                        unit_key="absolute[theta_abs=0.5]|p1|2").to_json()
    # a row as the schema 1 runner wrote it: the same keys, no params
    old = {k: v for k, v in written.items() if k != "params"} | {"schema_version": 1}
    row = ResultRow.from_json(old)
    assert (row.schema_version, row.method, row.method_kind, row.strategy, row.prompt_id, row.category, row.seed,
            row.unit_key, row.params) == (2, "absolute[theta_abs=0.5]", "entspec", "absolute", "p1", "code", 2,
                                          "absolute[theta_abs=0.5]|p1|2", {})
    assert row.result == greedy_trace() and row.to_json()["schema_version"] == 2
    # older or hand-written schema 1 rows: what the analysis groups by is derived from the result and config
    bare = ResultRow.from_json({"schema_version": 1, "config": {"strategy": "fixed"}, "result": greedy_trace().to_dict()})
    assert (bare.method, bare.method_kind, bare.strategy, bare.prompt_id, bare.category, bare.seed) == \
        ("speculative", "entspec", "fixed", "prompt", "all", 0)
    ar = ResultRow.from_json({"result": autoregressive_trace().to_dict(), "run": 4})  # no version: schema 1
    assert (ar.method, ar.method_kind, ar.strategy, ar.config, ar.extra) == \
        ("autoregressive", "autoregressive", "autoregressive", {}, {"run": 4})
    assert upgrade_row(written) == written  # schema 2 passes through
    with pytest.raises(ValueError, match="schema_version 3"):
        ResultRow.from_json({**written, "schema_version": 3})


def test_evaluator_summary():
    ev = SpeculativeDecodingEvaluator([greedy_trace(), greedy_trace(), autoregressive_trace()])
    s = ev.summary(n_resamples=999).set_index("metric")
    assert s.loc["new_tokens", "mean"] == pytest.approx(23 / 3)
    assert s.loc["new_tokens", "ci_low"] <= 23 / 3 <= s.loc["new_tokens", "ci_high"]
    assert s.loc["acceptance_rate", "n"] == 2  # NaN of the autoregressive run skipped
    assert s.loc["acceptance_rate", "mean"] == pytest.approx(5 / 9)
    assert s.loc["acceptance_rate", "ci_low"] == s.loc["acceptance_rate", "ci_high"] == pytest.approx(5 / 9)
    assert s.loc["verifier_calls", "pooled"] == 13
    by = ev.summary(metrics=["tokens_per_s"], by="decoding", n_resamples=99)
    assert by["decoding"].tolist() == ["autoregressive", "speculative"]


# ------------------------------------------------------------------------------------------- comparison

def timed(n_tokens: int, tokens_per_s: float, tokens: list[int] | None = None) -> GenerationResult:
    wall = n_tokens / tokens_per_s
    return GenerationResult(new_tokens=tokens or [7] * n_tokens,
                            rounds=[rnd(0, 0, 1, [], "none", 0.0, wall / n_tokens, wall / n_tokens)] * n_tokens,
                            prompt_len=1, wall_time_s=wall, prefill_time_s=0.0,
                            time_to_first_token_s=wall / n_tokens, finish_reason="length")


def paired_rows(factor: float, noise: float = 0.0, n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    base_tps = rng.uniform(10, 20, size=n)
    method, baseline = [], []
    for i, tps in enumerate(base_tps):
        keys = dict(prompt_id=f"p{i}", category="math" if i % 2 else "qa", seed=0)
        baseline.append(ResultRow(method="autoregressive", method_kind="autoregressive", strategy="autoregressive",
                                  config={}, result=timed(20, tps), **keys))
        speed = tps * factor * (1 + noise * rng.standard_normal())
        method.append(ResultRow(method="entropy", method_kind="entspec", strategy="absolute", config={},
                                result=timed(20, speed), **keys))
    return method, baseline, base_tps


def test_comparative_known_speedup():
    method, baseline, _ = paired_rows(2.0)
    cmp = ComparativeEvaluator(method, baseline)
    assert cmp.pair_keys == ["prompt_id", "seed"]
    per = cmp.per_prompt()
    assert len(per) == 12 and np.allclose(per["speedup"], 2.0) and per["outputs_match"].all()
    s = cmp.speedup(n_resamples=999)
    assert s["speedup"] == pytest.approx(2.0)
    assert s["speedup_ci_low"] == pytest.approx(2.0) and s["speedup_ci_high"] == pytest.approx(2.0)
    assert s["wilcoxon_p"] < 0.001  # exact two-sided p = 2 / 2^12
    assert s["output_match_rate"] == 1.0
    summary = cmp.summary(n_resamples=999)
    assert summary["category"].tolist() == ["all", "math", "qa"]
    assert summary["n_pairs"].tolist() == [12, 6, 6]
    assert np.allclose(summary["speedup"], 2.0)


def test_comparative_noisy_speedup_is_spec_bench_ratio_of_means():
    method, baseline, base_tps = paired_rows(1.5, noise=0.1, n=30, seed=1)
    cmp = ComparativeEvaluator(method, baseline)
    per = cmp.per_prompt()
    s = cmp.speedup(n_resamples=1999)
    assert s["speedup"] == pytest.approx(per["tokens_per_s"].mean() / per["baseline_tokens_per_s"].mean())
    assert s["speedup_ci_low"] < s["speedup"] < s["speedup_ci_high"]
    assert 1.35 < s["speedup_ci_low"] and s["speedup_ci_high"] < 1.65
    assert s["wilcoxon_p"] < 1e-5
    # no difference at all: the test is undefined, not a crash
    same = ComparativeEvaluator(baseline, baseline).speedup(n_resamples=99)
    assert same["speedup"] == 1.0 and math.isnan(same["wilcoxon_p"])


# ----------------------------------------------------------------------------------------- aggregation

def test_bootstrap_ci_degenerate_and_regular():
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, float("nan")]) == (1.0, 1.0)
    x = np.random.default_rng(0).normal(5.0, 1.0, size=200)
    low, high = bootstrap_ci(x, n_resamples=1999)
    assert low < x.mean() < high and high - low < 0.5
    assert bootstrap_ci(x, n_resamples=999, seed=3) == bootstrap_ci(x, n_resamples=999, seed=3)
    low, high = bootstrap_ci(x, statistic=np.median, n_resamples=999)
    assert low < np.median(x) < high
    ratio = lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis)  # noqa: E731
    assert paired_bootstrap_ci(([2.0], [1.0]), ratio) == (2.0, 2.0)


# ---------------------------------------------------------------------------------------------- theory

def test_theory_closed_forms():
    assert expected_tokens_per_call(0.5, 3) == pytest.approx((1 - 0.5 ** 4) / 0.5)
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert expected_tokens_per_call(0.0, 4) == 1.0
    assert expected_tokens_per_call(0.999999, 2) == pytest.approx(3.0, rel=1e-5)
    np.testing.assert_allclose(expected_tokens_per_call(0.8, np.arange(4)), [1, 1.8, 2.44, 2.952])
    assert expected_speedup(0.8, 4, 0.05) == pytest.approx((1 - 0.8 ** 5) / (0.2 * 1.2))
    assert expected_speedup(0.8, 0, 0.05) == 1.0
    for alpha, c in [(0.8, 0.05), (0.6, 0.2), (0.95, 0.01), (0.3, 0.5)]:
        best = max(range(65), key=lambda g: (1 - alpha ** (g + 1)) / ((1 - alpha) * (g * c + 1)))
        assert optimal_gamma(alpha, c) == best
    with pytest.raises(ValueError):
        expected_tokens_per_call(1.5, 2)


def test_acceptance_from_distributions():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert acceptance_from_distributions(p, q) == pytest.approx(0.5)
    assert float(acceptance_from_distributions(torch.tensor(p), torch.tensor(q))) == pytest.approx(0.5)
    batch = torch.softmax(torch.randn(3, 11), dim=-1)
    assert torch.allclose(acceptance_from_distributions(batch, batch), torch.ones(3))


# --------------------------------------------------------------------------- theory against the engine
# context_free_gpt2 (tests/tiny.py): every transformer weight zero, so p (or q) is the same at every position.

@pytest.fixture
def one_thread():
    """Tiny models are dominated by per-op overhead; extra threads on a busy CPU only make them slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokens_for_power(alpha: float, k: int, rel_tol: float = 0.03, sigmas: float = 3.5) -> int:
    """Tokens to generate so that rel_tol of the expected tokens per call is ``sigmas`` standard errors of
    the measured mean. Accepted count per round ~ truncated geometric: P(A=j) = α^j(1−α), P(A=k) = α^k."""
    probs = np.array([alpha ** j * (1 - alpha) for j in range(k)] + [alpha ** k])
    j = np.arange(k + 1)
    mean = (probs * j).sum()
    sd = math.sqrt((probs * j * j).sum() - mean ** 2)
    rounds = (sigmas * sd / (rel_tol * (1 + mean))) ** 2
    return int(math.ceil(rounds * (1 + mean)))


def test_engine_matches_leviathan_expected_tokens_per_call(one_thread):
    try:
        from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
    except ImportError:
        pytest.skip("engine not available")

    # α = Σ min(p, q) = 0.95: close to 1 so a few thousand tokens per k pin the mean to 3% at 3.5 σ
    # (at α = 0.75 the same power takes ~5x the tokens). Only token 1 has p < q: β = 0.25 / 0.30 there.
    target_probs = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.05, 0.05])
    draft_probs = torch.tensor([0.35, 0.30, 0.15, 0.10, 0.05, 0.05])
    alpha = float(acceptance_from_distributions(target_probs, draft_probs))
    assert alpha == pytest.approx(0.95)
    verifier = context_free_gpt2(target_probs.log())
    drafter = context_free_gpt2(draft_probs.log())
    with torch.no_grad():  # the models really are context-free
        out = verifier(torch.tensor([[1, 4, 2, 5]])).logits.softmax(-1)
    assert torch.allclose(out, target_probs.expand_as(out), atol=1e-6)

    prompt = torch.tensor([[0, 1]])
    for k in range(1, 7):
        dec = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k,
                                                                              gate=False))  # fixed k exactly
        rounds: list[RoundRecord] = []
        budget = tokens_for_power(alpha, k)
        for seed in range(math.ceil(budget / 1000)):  # short generations: the KV cache stays small
            res = dec.generate(prompt, max_new_tokens=1000, temperature=1.0, top_k=None, top_p=None,
                               seed=100 * k + seed, eos_token_id=None, ignore_eos=True)
            rounds += [r for r in res.rounds if r.stop_reason != "max_new_tokens"]  # drop budget-cut rounds
        assert all(r.drafted == k for r in rounds)
        measured = 1 + np.mean([r.accepted for r in rounds])  # = mean_accepted_tokens of the pooled rounds
        expected = expected_tokens_per_call(alpha, k)
        assert measured == pytest.approx(expected, rel=0.03), (k, len(rounds), measured, expected)
        # every accept prob is min(1, p/q) of its drafted token (the drafted token is known by its q)
        for r in rounds:
            for q_x, beta in zip(r.draft_token_probs, r.accept_probs):
                assert beta == pytest.approx(0.25 / 0.30 if abs(q_x - 0.30) < 1e-4 else 1.0, abs=1e-4)
