"""Experiment folder -> one table with a row per generation (``processed_data.csv``).

The folder is the ExperimentRunner's::

    EXP/configs/experiment.yaml   the resolved ExperimentConfig
    EXP/configs/manifest.json     git hash, library versions, device, date, ...
    EXP/results/results.jsonl     one row per finished (method, prompt, seed) unit

Every per-generation number comes from :func:`entspec.metrics.summarize` (that is,
:func:`entspec.metrics.generation_metrics`); this module only adds the columns that need other rows:
the baseline's tokens/s on the same prompt and seed, the speedup over it, and the per-generation DISCO
oracle gap (:func:`entspec.metrics.oracle_bound`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from entspec.metrics import oracle_bound, summarize
from entspec.records import KEY_FIELDS, DamagedRowError, GenerationResult, ResultRow, read_rows
from entspec.rules import threshold_parameter

__all__ = [
    "AnalysisError",
    "Experiment",
    "load_experiment",
    "processed_frame",
    "choose_baseline",
    "sweep_parameter",
]

RESULTS_FILE = Path("results") / "results.jsonl"
CONFIG_FILE = Path("configs") / "experiment.yaml"
MANIFEST_FILE = Path("configs") / "manifest.json"


class AnalysisError(ValueError):
    """The experiment folder cannot be analysed; the message names the path."""


@dataclass
class Experiment:
    """A loaded experiment folder: its rows, resolved config and manifest."""

    path: Path
    rows: list[ResultRow]
    config: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    damaged_lines: list[int] = field(default_factory=list)  # results.jsonl lines skipped with skip_damaged

    def results(self, method: str | None = None) -> list[GenerationResult]:
        return [r.result for r in self.rows if method is None or r.method == method]


def load_experiment(experiment_dir: str | Path, *, skip_damaged: bool = False) -> Experiment:
    """Read an experiment folder; :class:`AnalysisError` when the folder, its results or its rows are missing
    or its config or manifest is unreadable. Rows of an older schema are upgraded as they are read
    (:func:`entspec.records.upgrade_row`).

    A damaged row of ``results.jsonl`` (anything but a torn last line) raises
    :class:`entspec.records.DamagedRowError` naming the line, unless ``skip_damaged`` (then it is skipped,
    counted in ``Experiment.damaged_lines`` and logged).
    """
    path = Path(experiment_dir)
    if not path.is_dir():
        raise AnalysisError(f"experiment folder not found: {path}")
    results = path / RESULTS_FILE
    if not results.is_file():
        raise AnalysisError(f"no results file in the experiment folder: {results}")
    try:
        damaged: list[int] = []
        rows = list(read_rows(results, skip_damaged=skip_damaged, damaged=damaged))
    except DamagedRowError as e:
        raise AnalysisError(f"{e}, or skip damaged rows explicitly (--skip-damaged)") from None
    except (TypeError, KeyError, ValueError) as e:  # a row without "result", or of a foreign schema
        raise AnalysisError(f"malformed row in {results}: {e}") from e
    if not rows:
        raise AnalysisError(f"results file has no rows: {results}")
    return Experiment(path, rows, _read_yaml(path / CONFIG_FILE), _read_json(path / MANIFEST_FILE), damaged)


def _read_yaml(path: Path) -> dict[str, Any]:
    return _read_mapping(path, yaml.safe_load, (yaml.YAMLError,), "YAML")


def _read_json(path: Path) -> dict[str, Any]:
    return _read_mapping(path, json.loads, (json.JSONDecodeError,), "JSON")


def _read_mapping(path: Path, parse: Any, errors: tuple, kind: str) -> dict[str, Any]:
    """The mapping in ``path`` ({} when the file is absent); damage is an AnalysisError naming the file."""
    if not path.is_file():
        return {}
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (*errors, UnicodeDecodeError) as err:
        raise AnalysisError(f"{path}: not valid {kind} ({str(err).splitlines()[0]}); restore or delete it") from None
    if data is not None and not isinstance(data, dict):
        raise AnalysisError(f"{path}: expected a mapping, got {type(data).__name__}; restore or delete it")
    return data or {}


def choose_baseline(frame: pd.DataFrame, baseline: str | None = None) -> str | None:
    """The baseline's ``method_kind`` or ``method``: ``baseline`` if given, else "hf_generate" when present,
    else "autoregressive", else None (no speedups)."""
    kinds, methods = set(frame["method_kind"]), set(frame["method"])
    if baseline is not None:
        if baseline not in kinds and baseline not in methods:
            raise AnalysisError(f"baseline {baseline!r} is neither a method_kind nor a method of this experiment; "
                                f"kinds: {sorted(kinds)}")
        return baseline
    for kind in ("hf_generate", "autoregressive"):
        if kind in kinds:
            return kind
    return None


def baseline_mask(frame: pd.DataFrame, baseline: str | None) -> pd.Series:
    """Rows of the baseline (by method_kind, or by method when no kind has that name)."""
    if baseline is None:
        return pd.Series(False, index=frame.index)
    column = "method_kind" if baseline in set(frame["method_kind"]) else "method"
    return frame[column] == baseline


def sweep_parameter(strategy: str, config: dict[str, Any] | pd.Series) -> tuple[str | None, float]:
    """(name, value) of the parameter a sweep of ``strategy`` moves; (None, NaN) for non-entspec methods."""
    name = threshold_parameter(strategy)
    if name is None:
        return None, float("nan")
    value = config.get(name)
    if name == "theta_window" and (value is None or _isnan(value)):
        value = config.get("theta_abs")
    try:
        return name, float(value)
    except (TypeError, ValueError):
        return name, float("nan")


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _mean_shannon_entropy(result: GenerationResult) -> float:
    """Mean Shannon entropy of the drafted tokens (the configured type when Shannon was not traced)."""
    values = [h for r in result.rounds for h in r.entropies_by_type.get("shannon", r.entropies)]
    return float(np.mean(values)) if values else float("nan")


def processed_frame(experiment: Experiment, baseline: str | None = None) -> pd.DataFrame:
    """One row per generation: keys, flattened config, every generation metric, speedup and oracle gap.

    Config columns lose their ``config.`` prefix unless that would shadow a key or metric column.
    Added columns:

    * ``baseline_tokens_per_s``: mean tokens/s of the baseline's rows on the same prompt and seed (NaN when
      the baseline did not run that unit); ``speedup`` = tokens_per_s / baseline_tokens_per_s.
    * ``oracle_gap``, ``oracle_tokens_per_s``: :func:`entspec.metrics.oracle_bound` of this generation
      (achieved / oracle tokens per second under the trace's own time model; NaN without a round trace).
    * ``mean_draft_entropy``: mean Shannon entropy (nats) of the drafted tokens.
    * ``predicted_tokens_per_s``, ``replay_exact``, ``true_oracle_share``, ``true_oracle_share_uncapped``:
      the row replayed on its prompt's trace when the folder holds ``traces/`` (:mod:`entspec.replay.compare`;
      NaN otherwise).
    * ``sweep_parameter``, ``sweep_value``: the threshold parameter of the strategy and its value.
    * ``is_baseline``: the row belongs to the baseline.
    """
    rows = experiment.rows
    table = summarize(rows)
    metric_columns = set(table.columns) - {c for c in table.columns if c.startswith("config.")}
    rename = {}
    for column in table.columns:
        if column.startswith("config."):
            short = column[len("config."):]
            if short not in metric_columns and short not in KEY_FIELDS:
                rename[column] = short
    table = table.rename(columns=rename)
    table["category"] = table["category"].fillna("uncategorized")  # groupby would drop NaN keys
    # a config copy of a key (EntropyConfig.strategy) duplicates the key column: drop it when equal
    for key in KEY_FIELDS:
        dup = f"config.{key}"
        if dup in table and key in table and (table[dup].isna() | (table[dup] == table[key])).all():
            table = table.drop(columns=dup)

    oracle = [oracle_bound(r.result) if r.result.rounds else {} for r in rows]
    table["oracle_tokens_per_s"] = [o.get("oracle_tokens_per_s", np.nan) for o in oracle]
    table["oracle_gap"] = [o.get("oracle_gap", np.nan) for o in oracle]
    table["mean_draft_entropy"] = [_mean_shannon_entropy(r.result) for r in rows]
    from entspec.replay.compare import COLUMNS as TRACE_COLUMNS, trace_columns

    replayed = trace_columns(experiment.path, [r.as_mapping() for r in rows])  # None unless there are traces/
    for column in TRACE_COLUMNS:
        table[column] = replayed[column] if replayed else np.nan
    sweeps = [sweep_parameter(r.strategy, r.config) if r.method_kind == "entspec" else (None, np.nan)
              for r in rows]
    table["sweep_parameter"] = [s[0] for s in sweeps]
    table["sweep_value"] = [s[1] for s in sweeps]

    baseline = choose_baseline(table, baseline)
    is_base = baseline_mask(table, baseline)
    table["is_baseline"] = is_base
    base = table[is_base].groupby(["prompt_id", "seed"])["tokens_per_s"].mean().rename("baseline_tokens_per_s")
    table = table.merge(base, left_on=["prompt_id", "seed"], right_index=True, how="left")
    if "baseline_tokens_per_s" not in table:
        table["baseline_tokens_per_s"] = np.nan
    table["speedup"] = table["tokens_per_s"] / table["baseline_tokens_per_s"]
    table.attrs["baseline"] = baseline
    return table.reset_index(drop=True)
