"""Real generations next to their replay: predicted speed, exactness of the replay, share of the true oracle.

When an experiment folder holds ``traces/`` (from `entspec trace` on the same config), every greedy entspec
row is replayed on its prompt's trace with the row's own `EntropyConfig`:

* ``predicted_tokens_per_s``: the cost model's prediction of the row's speed (compare with ``tokens_per_s``);
* ``replay_exact``: the replay's per-round (drafted, accepted, emitted) equal the row's;
* ``true_oracle_share``: true-oracle time at the row's cap / replayed time of the row (1 = no stopping rule
  could be faster on this prompt); ``true_oracle_share_uncapped`` without a cap.

Both times come from the same cost model, so the share isolates the stopping rule from timing noise. A row with
a drafter window N is replayed on ``traces-wN`` (`entspec trace --drafter-context N`) when the folder has it.

When ``traces/`` holds sampling traces (`entspec trace` at the config's temperature), every entspec row sampled at
the traces' temperature / top-k / top-p is compared with the *expected-value* replay of its configuration on its
prompt's trajectories (`entspec.replay.expected`): ``predicted_tokens_per_s`` is the expected tokens/s over them,
``replay_exact`` is NaN (a sampled run has no exact replay), and the shares are of the sampling oracle. A row with
a drafter window N is compared with the sampling traces of ``traces-wN`` when the folder has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..engine.config import EntropyConfig
from .engine import replay, true_oracle
from .cost import COST_FILE, load_cost_model
from .expected import expected_replay, sampling_oracle
from .sampled import load_sampled_traces, trace_kind
from .trace import load_traces, trace_files

COLUMNS = ("predicted_tokens_per_s", "replay_exact", "true_oracle_share", "true_oracle_share_uncapped")


def trace_columns(experiment_dir: str | Path, rows: list[dict[str, Any]]) -> dict[str, list] | None:
    """The :data:`COLUMNS` for ``rows`` (NaN where a row cannot be replayed), or None without traces."""
    folder = Path(experiment_dir) / "traces"
    if not (folder / COST_FILE).is_file() or not any(folder.glob("*.npz")):
        return None
    cost = load_cost_model(folder)
    files = trace_files(folder)
    sampled = bool(files) and trace_kind(files[0]) == "sampled"
    variants: dict[int, tuple[dict, object] | None] = {0: (_by_prompt(folder, sampled), cost)}  # window -> traces
    out: dict[str, list] = {c: [] for c in COLUMNS}
    memo: dict = {}  # a prompt's expected replay per configuration (every seed of a sampled run shares it)
    for row in rows:
        window = (row.get("config") or {}).get("drafter_context") or 0
        if window not in variants:
            variants[window] = _windowed(folder.parent / f"traces-w{window}", sampled)
        if variants[window] is None:
            values = {}
        elif sampled:
            values = _sampled_values(row, *variants[window], memo)
        else:
            values = _row_values(row, *variants[window])
        for c in COLUMNS:
            out[c].append(values.get(c, np.nan))
    return out


def _by_prompt(folder: Path, sampled: bool) -> dict:
    """A folder's traces by prompt id: one greedy trace, or the list of a prompt's sampled trajectories."""
    if not sampled:
        return {t.meta.prompt_id: t for t in load_traces(folder)}
    traces: dict = {}
    for t in load_sampled_traces(folder):
        traces.setdefault(t.meta.prompt_id, []).append(t)
    return traces


def _windowed(folder: Path, sampled: bool) -> tuple[dict, object] | None:
    """A windowed traces folder's traces by prompt and its cost model (None when the folder has none, or traces of
    the other kind)."""
    files = trace_files(folder) if folder.is_dir() else []
    if not (folder / COST_FILE).is_file() or not files or (trace_kind(files[0]) == "sampled") != sampled:
        return None
    return _by_prompt(folder, sampled), load_cost_model(folder)


def _sampled_values(row: dict[str, Any], traces: dict, cost, memo: dict) -> dict[str, Any]:
    """A sampled row against the expected-value replay of its configuration on its prompt's trajectories."""
    trajectories = traces.get(row.get("prompt_id"))
    config = row.get("config", {})
    if not trajectories or row.get("method_kind") != "entspec":
        return {}
    meta = trajectories[0].meta
    if (config.get("temperature", 0), config.get("top_k"), config.get("top_p")) != (meta.temperature, meta.top_k,
                                                                                  meta.top_p):
        return {}
    if config.get("max_new_tokens", meta.max_new_tokens) != meta.max_new_tokens:
        return {}
    fields = EntropyConfig.parameter_names()
    params = {k: v for k, v in config.items() if k in fields}
    cfg = EntropyConfig(**params)
    if cfg.max_draft_len > meta.cap or (cfg.drafter_context or 0) != getattr(meta, "drafter_context", 0):
        return {}
    key = (row["prompt_id"], repr(sorted(params.items())))
    if key not in memo:
        tokens = time = oracle_cap = oracle = 0.0
        for t in trajectories:
            e = expected_replay(t, cfg, cost)
            tokens, time = tokens + e.tokens, time + e.mean_time_s
            oracle_cap += sampling_oracle(t, cost, cap=cfg.max_draft_len).time_s
            oracle += sampling_oracle(t, cost).time_s
        memo[key] = {"predicted_tokens_per_s": tokens / time, "replay_exact": np.nan,
                     "true_oracle_share": oracle_cap / time, "true_oracle_share_uncapped": oracle / time}
    return memo[key]


def _row_values(row: dict[str, Any], traces: dict, cost) -> dict[str, Any]:
    trace = traces.get(row.get("prompt_id"))
    config = row.get("config", {})
    if trace is None or row.get("method_kind") != "entspec" or config.get("temperature", 0) != 0:
        return {}
    result = row["result"]
    if len(result.new_tokens) > len(trace) or config.get("max_new_tokens", trace.meta.max_new_tokens) \
            != trace.meta.max_new_tokens:
        return {}
    fields = EntropyConfig.parameter_names()
    cfg = EntropyConfig(**{k: v for k, v in config.items() if k in fields})
    if cfg.max_draft_len > trace.meta.cap or (cfg.drafter_context or 0) != trace.meta.drafter_context:
        return {}  # traces answer the cap and the drafter window they were recorded with
    replayed = replay(trace, cfg, cost)
    engine = [(r.drafted, r.accepted, r.emitted) for r in result.rounds]
    return {
        "predicted_tokens_per_s": replayed.tokens_per_s,
        "replay_exact": float(replayed.rounds() == engine),
        "true_oracle_share": true_oracle(trace, cost, cap=cfg.max_draft_len).time_s / replayed.time_s,
        "true_oracle_share_uncapped": true_oracle(trace, cost).time_s / replayed.time_s,
    }
