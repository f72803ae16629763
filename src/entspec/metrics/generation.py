"""Per-generation metrics, computed from the raw round records alone.

Names follow the field (see ``/work/shared/references.md``): vLLM's *draft acceptance rate* and *mean
acceptance length*, Spec-Bench's *mean accepted tokens* and tokens/s, gpt-fast's ``accept_counts``.

Definitions (sums run over the rounds of the generation; one round = one verifier call):

* ``verifier_calls``        = R, the number of rounds.
* ``drafter_calls``         = Σ drafted: one drafter forward per drafted token (the first forward of a
  round also feeds the token the verifier emitted last). The engine proposes the token whose entropy
  trips the rule and stops after it, so no forward is spent on a position it declines to draft; an
  engine that did spend one would have it inside ``draft_time_s`` but not counted here.
* ``acceptance_rate``       = Σ accepted / Σ drafted (NaN when nothing was drafted).
* ``mean_accepted_tokens``  = 1 + Σ accepted / R: tokens per verifier call the rule earned, the vLLM
  "mean acceptance length" with every round counted as one draft (a round that drafted nothing is a
  draft of length 0, so autoregressive decoding scores exactly 1.0). When EOS or the token budget cuts
  the last round short, fewer tokens are appended than this counts; the realised figure is
  ``tokens_per_verifier_call`` = new_tokens / R.
* ``mean_draft_length``     = Σ drafted / R.   ``wasted_draft_tokens`` = Σ (drafted − accepted).
* per-token latency: each of the ``emitted`` tokens of a round is charged round_time_s / emitted;
  ``latency_p50/p90/p99_ms`` are percentiles (linear interpolation) over tokens, not rounds.
* time split: ``overhead_time_s`` = Σ (round_time − draft_time − verify_time); the ``*_time_frac`` are
  shares of the decode time Σ round_time_s (they sum to 1); prefill is reported apart
  (``prefill_time_s``) and is not part of the decode time.
* ``tokens_per_s``          = new_tokens / wall_time_s (prefill included, as Spec-Bench times it).

A generation with no rounds but ``counters`` (a Hugging Face baseline, when ``GenerationResult`` has
that field) gives its call counts and tokens/s only; see :func:`_with_counters`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

import numpy as np

from entspec.records import GenerationResult, RoundRecord

__all__ = [
    "generation_metrics",
    "pooled_metrics",
    "per_position_acceptance",
    "draft_length_distribution",
    "stop_reason_counts",
    "accept_counts",
    "GENERATION_METRIC_NAMES",
]

GENERATION_METRIC_NAMES: tuple[str, ...] = (
    "new_tokens",
    "wall_time_s",
    "tokens_per_s",
    "time_to_first_token_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "round_latency_mean_ms",
    "round_latency_p50_ms",
    "round_latency_p90_ms",
    "verifier_calls",
    "drafter_calls",
    "drafted_tokens",
    "accepted_tokens",
    "acceptance_rate",
    "mean_accepted_tokens",
    "tokens_per_verifier_call",
    "mean_draft_length",
    "wasted_draft_tokens",
    "prefill_time_s",
    "draft_time_s",
    "verify_time_s",
    "overhead_time_s",
    "draft_time_frac",
    "verify_time_frac",
    "overhead_time_frac",
)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def _as_list(results: GenerationResult | Iterable[GenerationResult]) -> list[GenerationResult]:
    return [results] if isinstance(results, GenerationResult) else list(results)


def _rounds(results: GenerationResult | Iterable[GenerationResult]) -> list[RoundRecord]:
    return [r for res in _as_list(results) for r in res.rounds]


def generation_metrics(result: GenerationResult) -> dict[str, float | int]:
    """Flat dict of the metrics in :data:`GENERATION_METRIC_NAMES` for one generation (module docstring)."""
    return pooled_metrics([result])


def pooled_metrics(results: Iterable[GenerationResult]) -> dict[str, float | int]:
    """The :func:`generation_metrics` of several generations pooled as if they were one.

    Counts and times are summed, rates are ratios of sums (Σ accepted / Σ drafted, Σ tokens / Σ wall
    time), percentiles run over all tokens / rounds, and ``time_to_first_token_s`` is the mean.
    For one generation this is exactly :func:`generation_metrics`.
    """
    results = _as_list(results)
    rounds = _rounds(results)
    n_calls = len(rounds)
    new_tokens = sum(len(res.new_tokens) for res in results)
    wall = sum(res.wall_time_s for res in results)
    prefill = sum(res.prefill_time_s for res in results)
    drafted = sum(r.drafted for r in rounds)
    accepted = sum(r.accepted for r in rounds)
    draft_t = sum(r.draft_time_s for r in rounds)
    verify_t = sum(r.verify_time_s for r in rounds)
    decode_t = sum(r.round_time_s for r in rounds)
    overhead_t = decode_t - draft_t - verify_t

    # Per-token latency: every token emitted in a round waited round_time / emitted.
    per_token_s = np.repeat(
        [r.round_time_s / r.emitted for r in rounds if r.emitted > 0],
        [r.emitted for r in rounds if r.emitted > 0],
    )
    round_s = np.asarray([r.round_time_s for r in rounds], dtype=float)
    ttft = [res.time_to_first_token_s for res in results]

    metrics = {
        "new_tokens": new_tokens,
        "wall_time_s": float(wall),
        "tokens_per_s": _ratio(new_tokens, wall),
        "time_to_first_token_s": float(np.mean(ttft)) if ttft else math.nan,
        "latency_p50_ms": 1e3 * _percentile(per_token_s, 50),
        "latency_p90_ms": 1e3 * _percentile(per_token_s, 90),
        "latency_p99_ms": 1e3 * _percentile(per_token_s, 99),
        "round_latency_mean_ms": 1e3 * float(round_s.mean()) if round_s.size else math.nan,
        "round_latency_p50_ms": 1e3 * _percentile(round_s, 50),
        "round_latency_p90_ms": 1e3 * _percentile(round_s, 90),
        "verifier_calls": n_calls,
        "drafter_calls": drafted,
        "drafted_tokens": drafted,
        "accepted_tokens": accepted,
        "acceptance_rate": _ratio(accepted, drafted),
        "mean_accepted_tokens": 1.0 + accepted / n_calls if n_calls else math.nan,
        "tokens_per_verifier_call": _ratio(new_tokens, n_calls),
        "mean_draft_length": _ratio(drafted, n_calls),
        "wasted_draft_tokens": drafted - accepted,
        "prefill_time_s": float(prefill),
        "draft_time_s": float(draft_t),
        "verify_time_s": float(verify_t),
        "overhead_time_s": float(overhead_t),
        "draft_time_frac": _ratio(draft_t, decode_t),
        "verify_time_frac": _ratio(verify_t, decode_t),
        "overhead_time_frac": _ratio(overhead_t, decode_t),
    }
    traceless = [res for res in results if not res.rounds and getattr(res, "counters", None)]
    if traceless:
        return _with_counters(metrics, traceless, all_traceless=len(traceless) == len(results))
    return metrics


_ROUND_DERIVED = (
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "round_latency_mean_ms", "round_latency_p50_ms",
    "round_latency_p90_ms", "drafted_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_tokens",
    "mean_draft_length", "wasted_draft_tokens", "draft_time_s", "verify_time_s", "overhead_time_s",
    "draft_time_frac", "verify_time_frac", "overhead_time_frac",
)


def _with_counters(metrics: dict, traceless: list[GenerationResult], all_traceless: bool) -> dict:
    """Generations without a round trace (Hugging Face baselines) carry only call counters
    (``GenerationResult.counters``: verifier_calls, drafter_calls). Their calls are added, everything
    that needs rounds becomes NaN, and, when no generation has a trace, ``mean_accepted_tokens`` is the
    realised new_tokens / verifier_calls (how Spec-Bench measures it)."""
    out = dict(metrics)
    out["verifier_calls"] += sum(int(res.counters.get("verifier_calls", 0)) for res in traceless)
    out["drafter_calls"] += sum(int(res.counters.get("drafter_calls", 0)) for res in traceless)
    out["tokens_per_verifier_call"] = _ratio(out["new_tokens"], out["verifier_calls"])
    out.update({name: math.nan for name in _ROUND_DERIVED})
    if all_traceless:
        out["mean_accepted_tokens"] = out["tokens_per_verifier_call"]
    return out


def per_position_acceptance(results: GenerationResult | Iterable[GenerationResult]) -> list[float]:
    """vLLM's per-position acceptance rate, for variable draft lengths.

    Entry i (0-based) = #{rounds with drafted ≥ i+1 and accepted ≥ i+1} / #{rounds with drafted ≥ i+1}.
    The list has one entry per position up to the longest draft; empty when nothing was drafted.
    """
    rounds = _rounds(results)
    longest = max((r.drafted for r in rounds), default=0)
    drafted = np.asarray([r.drafted for r in rounds])
    accepted = np.asarray([r.accepted for r in rounds])
    return [float(np.mean(accepted[drafted > i] > i)) for i in range(longest)]


def draft_length_distribution(results: GenerationResult | Iterable[GenerationResult]) -> Counter[int]:
    """Counter mapping draft length -> number of rounds with that many drafted tokens (0 included)."""
    return Counter(r.drafted for r in _rounds(results))


def stop_reason_counts(results: GenerationResult | Iterable[GenerationResult]) -> Counter[str]:
    """Counter of each round's ``stop_reason`` ("criterion", "max_draft_len", "max_new_tokens", ...)."""
    return Counter(r.stop_reason for r in _rounds(results))


def accept_counts(results: GenerationResult | Iterable[GenerationResult]) -> list[int]:
    """gpt-fast's ``accept_counts``: entry i = number of rounds that accepted exactly i draft tokens.

    Length = longest draft + 1 (so a fully accepted longest draft has a slot).
    """
    rounds = _rounds(results)
    longest = max((r.drafted for r in rounds), default=0)
    return np.bincount([r.accepted for r in rounds], minlength=longest + 1).tolist() if rounds else [0]
