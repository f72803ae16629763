"""Batch replay against the batched runs it models: predicted and measured decode speed, on the same prompts.

`entspec bench --batch-sizes` (with ``--replay``, the default) records greedy traces of its prompts into each
batch size's folder (as `entspec trace` does). Every greedy batch a method decoded (its rows in their order) is
then replayed on those traces: `replay_batch` with the method's own `EntropyConfig`, `plain_batch` for batched
autoregressive decoding, both timed by the folder's measured `BatchCostModel` (``configs/batch_costs.json``).

Compared is decode time, a batch's wall time (its slowest row) less its prefill, since batch replay does not model
the prefill. ``exact`` is the share of rows whose replayed (drafted, accepted, emitted) rounds equal the run's:
replay prices the batch stop with the measured table, the engine with that table refined by its own rounds'
timings, so cost-stopped methods may draft differently where a step nearly pays. Hugging Face baselines and
sampled rows are not replayed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..engine.batch_cost import BatchCostModel
from ..engine.config import EntropyConfig
from ..metrics import load_rows
from .batch import plain_batch, replay_batch
from .sampled import trace_kind
from .trace import load_traces, trace_files

COST_FILE = Path("configs") / "batch_costs.json"


def batch_replay_table(experiment_dir: str | Path) -> pd.DataFrame | None:
    """Per method: decode tokens/s measured and predicted by batch replay, their ratio, the share of rows replayed
    exactly and how many batches were compared; None when the folder has no greedy traces or no batch costs."""
    folder = Path(experiment_dir)
    files = trace_files(folder / "traces")
    if not (folder / COST_FILE).is_file() or not files or trace_kind(files[0]) != "greedy":
        return None
    traces = {t.meta.prompt_id: t for t in load_traces(folder / "traces")}
    costs = BatchCostModel.load(folder / COST_FILE)
    batches: dict[tuple, list] = {}
    for row in load_rows(folder / "results" / "results.jsonl"):
        if row.method_kind in ("entspec", "autoregressive") and not row.config.get("temperature"):
            prompts = tuple((row.result.batch or {}).get("prompts", [row.prompt_id]))
            batches.setdefault((row.method, row.seed, prompts), []).append(row)
    fields = EntropyConfig.parameter_names()
    lines = []
    for (method, _, prompts), members in batches.items():
        ordered = [traces.get(p) for p in prompts]
        if None in ordered or len(members) != len(prompts):
            continue
        members.sort(key=lambda r: (r.result.batch or {}).get("row", 0))
        if members[0].method_kind == "autoregressive":
            replayed = plain_batch(ordered, costs, len(ordered))
        else:
            config = EntropyConfig(**{k: v for k, v in members[0].config.items() if k in fields})
            if (config.max_draft_len > min(t.meta.cap for t in ordered)
                    or (config.drafter_context or 0) != ordered[0].meta.drafter_context):
                continue
            replayed = replay_batch(ordered, config, costs, len(ordered))
        exact = [row.rounds() == [(r.drafted, r.accepted, r.emitted) for r in m.result.rounds]
                 for row, m in zip(replayed.rows, members)]
        lines.append({"method": method, "tokens": sum(len(m.result.new_tokens) for m in members),
                      "measured_s": max(m.result.wall_time_s for m in members) - members[0].result.prefill_time_s,
                      "predicted_s": replayed.time_s, "exact": sum(exact) / len(exact)})
    if not lines:
        return None
    frame = pd.DataFrame(lines).groupby("method").agg(tokens=("tokens", "sum"), measured_s=("measured_s", "sum"),
                                                      predicted_s=("predicted_s", "sum"), exact=("exact", "mean"),
                                                      batches=("exact", "size"))
    frame["measured_tokens_per_s"] = frame.tokens / frame.measured_s
    frame["predicted_tokens_per_s"] = frame.tokens / frame.predicted_s
    frame["predicted_over_measured"] = frame.predicted_tokens_per_s / frame.measured_tokens_per_s
    return frame.reset_index()
