"""Dense threshold curves replayed on the experiment's traces (``EXP/traces``, from `entspec trace` or `entspec demo`).

For every curve of the comparison figure (an entspec strategy and one setting of its other parameters) the rule is
replayed (:func:`entspec.replay.engine.replay`) at ``points`` values of its threshold parameter spanning
the registry's sweep (`entspec.rules.RULES`) and the measured values; the other parameters stay as the experiment's
method has them. Ratios of total times over the traces, as `entspec tune` reports them
(:func:`entspec.replay.engine.predicted_speedups`): ``speedup`` over plain decoding under the traces' cost model,
``of_oracle`` the true oracle's time (no cap) over the rule's, ``oracle_speedup`` the true oracle's speedup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from entspec.engine.config import EntropyConfig
from entspec.replay.cost import COST_FILE, load_cost_model
from entspec.replay.engine import plain_decoding, replay, true_oracle
from entspec.replay.trace import load_traces, trace_files
from entspec.rules import RULES

__all__ = ["threshold_curves", "COLUMNS"]

COLUMNS = ["strategy", "line", "parameter", "value", "measured", "speedup", "of_oracle", "oracle_speedup"]


def threshold_curves(experiment_dir: str | Path, configs: dict[tuple[str, str], tuple[dict, set]],
                     prompts: set[str], points: int = 30) -> pd.DataFrame | None:
    """One row per replayed point: :data:`COLUMNS` (``measured``: an experiment's method has this threshold);
    None when the folder has no traces.

    Args:
        configs: (strategy, line) -> (the `EntropyConfig` fields of one of its greedy methods, the threshold
            values its methods have).
        prompts: the experiment's prompt ids (traces of other prompts are left out).
    """
    folder = Path(experiment_dir) / "traces"
    if not (folder / COST_FILE).is_file() or not trace_files(folder):
        return None
    cost = load_cost_model(folder)
    traces = [t for t in load_traces(folder) if t.meta.prompt_id in prompts]
    if not traces:
        return None
    plain = sum(plain_decoding(t, cost).time_s for t in traces)
    oracle = sum(true_oracle(t, cost).time_s for t in traces)
    out = []
    for (strategy, line), (config, measured) in configs.items():
        knob = RULES[strategy].threshold
        for value in _grid(strategy, measured, traces[0].meta.cap, points):
            try:
                rule = sum(replay(t, EntropyConfig(**{**config, knob: value}), cost).time_s for t in traces)
            except ValueError:  # beyond the traces' cap, or a value the rule refuses
                continue
            out.append((strategy, line, knob, value, value in measured, plain / rule, oracle / rule, plain / oracle))
    return pd.DataFrame(out, columns=COLUMNS)


def _grid(strategy: str, measured: set, cap: int, points: int) -> list:
    """``points`` values spanning the registry's sweep of the threshold and the measured values, and those; every
    integer (up to the traces' cap) for an integer threshold (max_draft_len, heuristic_initial)."""
    info = RULES[strategy]
    values = [*info.sweep.get(info.threshold, ()), *measured]
    if not values:
        return []
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return list(range(max(1, min(values)), min(max(values), cap) + 1))
    return sorted(set(np.linspace(min(values), max(values), points).tolist()) | set(measured))
