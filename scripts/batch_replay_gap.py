"""Where batch replay and a batched `entspec bench` run part: per method, the run's rounds against the rounds batch
replay gives the same batches (`entspec.replay.batch_check` gives only the decode speeds).

For every entspec method of a greedy bench folder with traces of its prompts: verifier calls per batch, drafted
tokens per call, acceptance (accepted / drafted), measured and replayed, and decode seconds per verifier call (wall
time less prefill, summed over batches) measured and predicted by the folder's batch costs. Then what the verifier
calls of the run cost by rows x positions per row (median over every entspec method's calls, 3 or more calls)
against the folder's measured table (``configs/batch_costs.json``). Without traces only the second table.

    .venv/bin/python scripts/batch_replay_gap.py runs/bench-int8-b4-128-fixed/float32/b4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from entspec.engine.batch_cost import BatchCostModel
from entspec.engine.config import EntropyConfig
from entspec.metrics import load_rows
from entspec.replay.batch import replay_batch
from entspec.replay.batch_check import COST_FILE
from entspec.replay.trace import load_traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a batched bench folder (OUT/DTYPE/bB) with results/, traces/ and configs/")
    folder = Path(parser.parse_args().folder)
    costs = BatchCostModel.load(folder / COST_FILE)
    batches: dict[tuple, list] = {}
    for row in load_rows(folder / "results" / "results.jsonl"):
        if row.method_kind == "entspec" and not row.config.get("temperature"):
            prompts = tuple((row.result.batch or {}).get("prompts", [row.prompt_id]))
            batches.setdefault((row.method, row.seed, prompts), []).append(row)
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        if (folder / "traces").is_dir():
            print(rounds_table(batches, {t.meta.prompt_id: t for t in load_traces(folder / "traces")}, costs)
                  .round(3).to_string(), end="\n\n")
        print(verify_table(batches, costs).round(3).to_string())


def verify_table(batches: dict[tuple, list], costs: BatchCostModel) -> pd.DataFrame:
    seconds: dict[tuple[int, int], list[float]] = {}
    for members in batches.values():
        for i in range(max(len(m.result.rounds) for m in members)):
            active = [m for m in members if len(m.result.rounds) > i]
            first = active[0].result.rounds[i]
            seconds.setdefault((len(active), first.verify_width), []).append(first.verify_time_s)
    lines = [{"rows": b, "positions": w, "calls": len(s), "measured_s": float(np.median(s)),
              "table_s": costs.measured_verify(b, w)} for (b, w), s in sorted(seconds.items()) if len(s) >= 3]
    return pd.DataFrame(lines).set_index(["rows", "positions"])


def rounds_table(batches: dict[tuple, list], traces: dict, costs: BatchCostModel) -> pd.DataFrame:
    fields = EntropyConfig.parameter_names()
    lines = []
    for (method, _, prompts), members in batches.items():
        members.sort(key=lambda r: (r.result.batch or {}).get("row", 0))
        config = EntropyConfig(**{k: v for k, v in members[0].config.items() if k in fields})
        replayed = replay_batch([traces[p] for p in prompts], config, costs, len(prompts))
        run = [r for m in members for r in m.result.rounds]
        lines.append({"method": method,
                      "calls": max(len(m.result.rounds) for m in members),
                      "calls_replayed": len(replayed.batches[0]),
                      "drafted": sum(r.drafted for r in run), "accepted": sum(r.accepted for r in run),
                      "emitted": sum(r.emitted for r in run),
                      "drafted_replayed": sum(sum(r.drafted) for r in replayed.rows),
                      "accepted_replayed": sum(sum(r.accepted) for r in replayed.rows),
                      "decode_s": max(m.result.wall_time_s for m in members) - members[0].result.prefill_time_s,
                      "decode_s_replayed": replayed.time_s})
    frame = pd.DataFrame(lines).groupby("method").sum(numeric_only=True)
    return pd.DataFrame({
        "acceptance": frame.accepted / frame.drafted,
        "acceptance_replayed": frame.accepted_replayed / frame.drafted_replayed,
        "drafted_per_call": frame.drafted / frame.calls,
        "drafted_per_call_replayed": frame.drafted_replayed / frame.calls_replayed,
        "calls": frame.calls, "calls_replayed": frame.calls_replayed,
        "s_per_call": frame.decode_s / frame.calls,
        "s_per_call_replayed": frame.decode_s_replayed / frame.calls_replayed})


if __name__ == "__main__":
    main()
