"""``AnalysisPipeline``: an experiment folder in, tables, figures and a report out.

>>> out = AnalysisPipeline("runs/exp1").run_full_analysis()   # writes runs/exp1/plots/
>>> print(out.summary_markdown)

Steps: 1. load rows and build the per-generation table; 2. per-method tables with bootstrap CIs;
3. paired tests of the entropy configurations; 4. entropy vs acceptance; 5. clustering; 6. threshold curves
replayed on the traces (when there are traces) and figures;
7. report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from entspec.analysis.curves import threshold_curves
from entspec.analysis.clustering import Clustering, cluster_items, configuration_features, prompt_features
from entspec.analysis.load import AnalysisError, load_experiment, processed_frame
from entspec.rules import entropy_rules, threshold_parameter
from entspec.analysis.plots import plot_comparison, plot_entropy, plot_performance
from entspec.analysis.report import ReportInputs, best_row, build_report, level_label, summary_markdown
from entspec.atomic import atomic_path, atomic_write_text
from entspec.engine.config import EntropyConfig
from entspec.analysis.stats import method_table, paired_tests
from entspec.records import GenerationResult, ResultRow
from entspec.metrics import EntropyAcceptance, entropy_acceptance, per_position_acceptance

__all__ = ["AnalysisPipeline", "AnalysisResult"]

FIGURES = {"entropy": "entropy_analysis.png", "performance": "performance_analysis.png",
           "comparison": "comparison_analysis.png"}
REFERENCE_LABELS = ("best fixed k", "HF assisted (default)")


@dataclass
class _Traced:
    """What the entspec rows with a round trace say: entropy vs acceptance, and per method the acceptance per
    draft position and every round's draft length."""

    acceptance: EntropyAcceptance
    positions: dict[str, list[float]]
    draft_lengths: dict[str, np.ndarray]


def _curve_configs(rows: list[ResultRow], sweeps: pd.DataFrame) -> dict[tuple[str, str], tuple[dict, set]]:
    """(strategy, line) of the comparison figure -> (the EntropyConfig fields of its first greedy method, the
    threshold values of its methods)."""
    fields = EntropyConfig.parameter_names()
    out: dict[tuple[str, str], tuple[dict, set]] = {}
    for row in rows:
        knob = threshold_parameter(row.strategy)
        if row.method in sweeps.index and knob and not row.config.get("temperature"):
            config, measured = out.setdefault((row.strategy, sweeps.loc[row.method, "line"]),
                                              ({k: v for k, v in row.config.items() if k in fields}, set()))
            if row.config.get(knob) is not None:
                measured.add(row.config[knob])
    return out


def _labels(rows: list[ResultRow]) -> dict[str, str]:
    """Method id -> its declared parameters as a point label (the id when it declares none)."""
    return {row.method: row.params_text or row.method for row in rows}


@dataclass
class AnalysisResult:
    """Paths of everything written, the compact summary, and the tables behind them.

    Also readable as a dict: ``result["summary_markdown"]``, ``result["report"]``.
    """

    output_dir: Path
    processed_data: Path
    report: Path
    figures: dict[str, Path]
    tables: dict[str, Path]
    summary_markdown: str
    baseline: str | None
    references: dict[str, str | None]
    frame: pd.DataFrame = field(repr=False)
    method_table: pd.DataFrame = field(repr=False)
    paired_tests: pd.DataFrame = field(repr=False)
    clusterings: list[Clustering] = field(repr=False, default_factory=list)
    seconds: float = 0.0

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Paths (as str), the summary and the references: JSON-friendly."""
        return {"output_dir": str(self.output_dir), "processed_data": str(self.processed_data),
                "report": str(self.report), "figures": {k: str(v) for k, v in self.figures.items()},
                "tables": {k: str(v) for k, v in self.tables.items()}, "summary_markdown": self.summary_markdown,
                "baseline": self.baseline, "references": dict(self.references)}


class AnalysisPipeline:
    """Analyse one experiment folder (``configs/``, ``results/results.jsonl``) into ``output_dir``.

    Args:
        experiment_dir: the folder the ExperimentRunner wrote.
        output_dir: where to write (default ``experiment_dir/plots``).
        baseline: method_kind (or method) the speedups are relative to; default "hf_generate" when present,
            else "autoregressive".
        hf_default: the HF assisted method with transformers' default settings; default the hf_assisted
            method whose id contains "default", else the only hf_assisted method.
        confidence, n_resamples, seed: bootstrap intervals (prompts are resampled).
        alpha: family-wise level of the Holm-corrected paired tests.
        entropy_bins: number of quantile bins of the acceptance-by-entropy curve.
        skip_damaged: skip (and count) damaged rows of ``results.jsonl`` instead of refusing the folder.

    Every file is written atomically: a killed analysis leaves each output as it was before, or complete.
    """

    def __init__(self, experiment_dir: str | Path, output_dir: str | Path | None = None, *,
                 baseline: str | None = None, hf_default: str | None = None, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05, entropy_bins: int = 8,
                 skip_damaged: bool = False) -> None:
        _check_settings(confidence=confidence, alpha=alpha, n_resamples=n_resamples, entropy_bins=entropy_bins,
                        seed=seed)
        self.experiment_dir = Path(experiment_dir)
        self.output_dir = Path(output_dir) if output_dir is not None else self.experiment_dir / "plots"
        self.baseline = baseline
        self.hf_default = hf_default
        self.confidence = confidence
        self.n_resamples = n_resamples
        self.seed = seed
        self.alpha = alpha
        self.entropy_bins = entropy_bins
        self.skip_damaged = skip_damaged

    def run_full_analysis(self) -> AnalysisResult:
        start = time.perf_counter()
        # 1. Rows -> one row per generation (raises AnalysisError on a missing/empty folder)
        experiment = load_experiment(self.experiment_dir, skip_damaged=self.skip_damaged)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        frame = processed_frame(experiment, self.baseline)
        baseline = frame.attrs["baseline"]
        processed = self._write_csv(frame, "processed_data.csv", index=False)
        # 2. Per-method tables (all prompts and per category) with bootstrap CIs
        table = method_table(frame, confidence=self.confidence, n_resamples=self.n_resamples, seed=self.seed)
        tables = {"summary_by_category": self._write_csv(table, "summary_by_category.csv", index=False)}
        # 3. Paired tests: each entropy configuration vs the best fixed k and HF assisted (defaults)
        references = self._references(table)
        tests = self._paired_tests(frame, references)
        tables["paired_tests"] = self._write_csv(tests, "paired_tests.csv", index=False)
        # 4. Entropy vs acceptance, on every traced speculative generation
        traced = self._traced(experiment.rows)
        tables["entropy_stats"] = self._write_csv(traced.acceptance.stats, "entropy_stats.csv")
        # 5. Clustering of configurations and of prompts
        clusterings = [cluster_items(configuration_features(frame), "configurations", seed=self.seed),
                       cluster_items(prompt_features(frame), "prompts", seed=self.seed)]
        tables["clusters"] = self._write_csv(pd.concat([c.table() for c in clusterings], ignore_index=True),
                                             "clusters.csv", index=False)
        # 6. Threshold curves replayed on the traces (when the folder has traces/), then the figures
        sweeps = self._sweeps(frame)
        curves = threshold_curves(self.experiment_dir, _curve_configs(experiment.rows, sweeps),
                                  set(frame["prompt_id"]))
        if curves is not None:
            tables["replay_curves"] = self._write_csv(curves, "replay_curves.csv", index=False)
        figures = self._figures(table, references, traced, _labels(experiment.rows), baseline, sweeps, curves)
        # 7. Report and the compact summary
        report = self.output_dir / "final_report.md"
        atomic_write_text(report, build_report(ReportInputs(
            title=f"entspec analysis: {self._name(experiment.config)}", experiment_dir=str(self.experiment_dir),
            config=experiment.config, manifest=experiment.manifest, damaged_lines=experiment.damaged_lines,
            frame=frame, table=table, baseline=baseline, tests=tests, references=references,
            entropy_stats=traced.acceptance.stats, n_tokens=len(traced.acceptance.tokens), clusterings=clusterings,
            figures={name: path.name for name, path in figures.items()}, entropy_strategies=entropy_rules(),
            alpha=self.alpha, confidence=self.confidence, n_resamples=self.n_resamples, curves=curves)))
        return AnalysisResult(
            output_dir=self.output_dir, processed_data=processed, report=report, figures=figures, tables=tables,
            summary_markdown=summary_markdown(table, baseline, self.confidence), baseline=baseline,
            references=references, frame=frame, method_table=table, paired_tests=tests, clusterings=clusterings,
            seconds=time.perf_counter() - start)

    def _write_csv(self, frame: pd.DataFrame, name: str, **kwargs: Any) -> Path:
        path = self.output_dir / name
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, **kwargs)
        return path

    def _name(self, config: dict[str, Any]) -> str:
        return config.get("experiment_name") or config.get("name") or self.experiment_dir.name

    def _paired_tests(self, frame: pd.DataFrame, references: dict[str, str | None]) -> pd.DataFrame:
        """Each entropy configuration (an entspec method whose strategy is an entropy rule) vs the references."""
        entropy_methods = sorted(frame.loc[(frame["method_kind"] == "entspec")
                                           & frame["strategy"].isin(entropy_rules()), "method"].unique())
        return paired_tests(frame, entropy_methods, {k: v for k, v in references.items() if v is not None},
                            alpha=self.alpha)

    def _traced(self, rows: list[ResultRow]) -> _Traced:
        """Entropy vs acceptance, acceptance per draft position and draft lengths of the traced entspec rows."""
        spec = [row for row in rows if row.method_kind == "entspec" and row.result.rounds]
        by_method: dict[str, list[GenerationResult]] = {}
        for row in spec:
            by_method.setdefault(row.method, []).append(row.result)
        return _Traced(
            acceptance=entropy_acceptance([row.result for row in spec], bins=self.entropy_bins,
                                          confidence=self.confidence),
            positions={method: per_position_acceptance(results) for method, results in sorted(by_method.items())},
            draft_lengths={method: np.array([rnd.drafted for res in results for rnd in res.rounds])
                           for method, results in by_method.items()})

    def _figures(self, table: pd.DataFrame, references: dict[str, str | None], traced: _Traced,
                 labels: dict[str, str], baseline: str | None, sweeps: pd.DataFrame,
                 curves: pd.DataFrame | None) -> dict[str, Path]:
        out, level = self.output_dir, level_label(self.confidence)
        overall = table[table["category"] == "all"]
        ref_speedups = {label: float(overall.loc[overall["method"] == method, "speedup"].iloc[0])
                        if method is not None else float("nan") for label, method in references.items()}
        return {
            "entropy": plot_entropy(traced.acceptance, traced.positions, out / FIGURES["entropy"], level=level),
            "performance": plot_performance(table, traced.draft_lengths, out / FIGURES["performance"], baseline,
                                            level),
            "comparison": plot_comparison(overall, sweeps, ref_speedups, out / FIGURES["comparison"], baseline, level,
                                          labels=labels, curves=curves),
        }

    def _references(self, table: pd.DataFrame) -> dict[str, str | None]:
        """{"best fixed k": method or None, "HF assisted (default)": method or None}."""
        overall = table[table["category"] == "all"]
        fixed = best_row(table, (table["method_kind"] == "entspec") & (table["strategy"] == "fixed"))
        hf_methods = sorted(overall.loc[overall["method_kind"] == "hf_assisted", "method"])
        hf = self.hf_default
        if hf is None:
            named = [m for m in hf_methods if "default" in m]
            hf = named[0] if named else (hf_methods[0] if len(hf_methods) == 1 else None)
        elif hf not in set(overall["method"]):
            hf = None
        return dict(zip(REFERENCE_LABELS, (None if fixed is None else fixed["method"], hf)))

    @staticmethod
    def _sweeps(frame: pd.DataFrame) -> pd.DataFrame:
        """Per entspec method: strategy, sweep parameter and value, and a line label made of the other
        EntropyConfig fields that vary within the strategy (e.g. "entropy_type=renyi")."""
        spec = frame[frame["method_kind"] == "entspec"]
        if spec.empty:
            return pd.DataFrame(columns=["strategy", "sweep_parameter", "sweep_value", "line"])
        per_method = spec.groupby("method").first()
        # candidate line keys: the rule parameters (shared fields and every registered rule's) and the temperature
        candidates = sorted(c for c in EntropyConfig.parameter_names() | {"temperature"} if c in per_method)
        lines = []
        for method, row in per_method.iterrows():
            part = per_method[per_method["strategy"] == row["strategy"]]
            varying = [c for c in candidates if c != threshold_parameter(row["strategy"])
                       and part[c].astype(str).nunique() > 1]
            lines.append(", ".join(f"{c}={_short(row[c])}" for c in varying))
        out = per_method[["strategy", "sweep_parameter", "sweep_value"]].copy()
        out["line"] = lines
        return out


def _check_settings(*, confidence: Any, alpha: Any, n_resamples: Any, entropy_bins: Any, seed: Any) -> None:
    """One-line AnalysisError naming the first bad setting (before anything is read or written)."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    checks = [(number(confidence) and 0 < confidence < 1, "confidence", confidence, "must be in (0, 1)"),
              (number(alpha) and 0 < alpha < 1, "alpha", alpha, "must be in (0, 1)"),
              (integer(n_resamples) and n_resamples >= 1, "n_resamples", n_resamples, "must be an integer >= 1"),
              (integer(entropy_bins) and entropy_bins >= 1, "entropy_bins", entropy_bins, "must be an integer >= 1"),
              (integer(seed) and seed >= 0, "seed", seed, "must be an integer >= 0")]
    for ok, name, value, why in checks:
        if not ok:
            raise AnalysisError(f"{name}: {why} (got {value!r})")


def _short(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
