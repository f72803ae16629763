"""Analysis of a real (tiny-model) experiment folder: files, numbers, figures, errors, degenerate folders."""

from __future__ import annotations

import argparse
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from analysis_fixtures import ENTSPEC_METHODS, build_experiment
from entspec.analysis import AnalysisError, AnalysisPipeline, load_experiment, processed_frame
from entspec.analysis.cli import register
from entspec.analysis.clustering import cluster_items
from entspec.analysis.stats import holm
from entspec.metrics import GENERATION_METRIC_NAMES
from entspec.records import append_jsonl

FIGURES = ("entropy_analysis.png", "performance_analysis.png", "comparison_analysis.png")
N_PROMPTS = 6
N_METHODS = 3 + len(ENTSPEC_METHODS)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_experiment(tmp_path_factory.mktemp("exp"), n_prompts=N_PROMPTS)


@pytest.fixture(scope="module")
def analysis(experiment):
    return AnalysisPipeline(experiment, n_resamples=500).run_full_analysis()


@pytest.fixture(scope="module")
def data(analysis):
    return pd.read_csv(analysis.processed_data)


# ------------------------------------------------------------------------------------------ helpers
def parse_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Every markdown table, keyed by the heading above it."""
    tables, heading, lines = {}, None, markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            tables.setdefault(heading, rows)
            continue
        i += 1
    return tables


def cell(text: str) -> tuple[float, float, float]:
    """'1.234 [1.100, 1.350]' -> (1.234, 1.1, 1.35); 'n/a' -> NaNs."""
    if text == "n/a":
        return math.nan, math.nan, math.nan
    m = re.fullmatch(r"(-?[\d.]+)(?: \[(-?[\d.]+), (-?[\d.]+)\])?", text)
    assert m, text
    value = float(m.group(1))
    return value, float(m.group(2) or value), float(m.group(3) or value)


def expected_from_csv(data: pd.DataFrame, category: str | None) -> pd.DataFrame:
    """Independent recomputation: per-prompt means over seeds, then means over prompts (Spec-Bench speedup)."""
    part = data if category is None else data[data["category"] == category]
    prompts = part.groupby(["method", "prompt_id"])[
        ["tokens_per_s", "baseline_tokens_per_s", "mean_accepted_tokens", "acceptance_rate"]].mean()
    by_method = prompts.groupby("method")
    out = by_method[["tokens_per_s", "mean_accepted_tokens", "acceptance_rate"]].mean()
    out["speedup"] = by_method["tokens_per_s"].mean() / by_method["baseline_tokens_per_s"].mean()
    return out


def assert_close(shown: float, expected: float, digits: int) -> None:
    if math.isnan(expected):
        assert math.isnan(shown)
    else:
        assert abs(shown - expected) <= 0.5 * 10 ** -digits + 1e-9, (shown, expected)


# -------------------------------------------------------------------------------------------- tests
def test_writes_every_file(analysis, experiment):
    out = experiment / "plots"
    assert analysis.output_dir == out
    for name in ("processed_data.csv", "final_report.md", *FIGURES, "summary_by_category.csv",
                 "paired_tests.csv", "clusters.csv", "entropy_stats.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert set(analysis.figures) == {"entropy", "performance", "comparison"}
    json.dumps(analysis.to_dict())  # paths and summary are JSON-friendly
    assert analysis["summary_markdown"] == analysis.summary_markdown
    report = analysis.report.read_text()
    for name in FIGURES:
        assert f"]({name})" in report  # embedded with a relative path
    for section in ("## Setup", "## Results per category", "## Best configuration per category", "## Paired tests",
                    "## Performance clustering", "## Limitations", "git_hash"):
        assert section in report


def test_processed_data_has_config_metrics_and_speedup(data):
    assert len(data) == N_PROMPTS * N_METHODS
    for column in ("method", "method_kind", "strategy", "prompt_id", "category", "seed", "theta_abs",
                   "entropy_type", "max_draft_len", "temperature", "speedup", "baseline_tokens_per_s", "oracle_gap",
                   *GENERATION_METRIC_NAMES):
        assert column in data, column
    assert set(data["method_kind"]) == {"hf_generate", "autoregressive", "hf_assisted", "entspec"}
    base = data[data["method"] == "hf_generate"].set_index(["prompt_id", "seed"])["tokens_per_s"]
    expected = data["tokens_per_s"] / base.loc[list(zip(data["prompt_id"], data["seed"]))].to_numpy()
    np.testing.assert_allclose(data["speedup"], expected, rtol=1e-12)
    np.testing.assert_allclose(data.loc[data["method"] == "hf_generate", "speedup"], 1.0)
    spec = data[data["method_kind"] == "entspec"]
    assert spec["acceptance_rate"].between(0, 1).all() and spec["oracle_gap"].between(0, 1 + 1e-9).all()
    assert data.loc[data["method_kind"] == "hf_assisted", "acceptance_rate"].isna().all()  # no round trace


def test_report_tables_equal_recomputation_from_processed_data(analysis, data):
    tables = parse_tables(analysis.report.read_text())
    categories = {"all": "Summary (all prompts)", **{c: f"Category: {c}" for c in data["category"].unique()}}
    for category, heading in categories.items():
        rows = tables[heading]
        expected = expected_from_csv(data, None if category == "all" else category)
        assert {r["method"] for r in rows} == set(expected.index)
        for row in rows:
            exp = expected.loc[row["method"]]
            for column, metric in (("speedup [95% CI]", "speedup"),
                                   ("mean accepted tokens [95% CI]", "mean_accepted_tokens"),
                                   ("acceptance rate [95% CI]", "acceptance_rate")):
                value, low, high = cell(row[column])
                assert_close(value, exp[metric], 3)
                if not math.isnan(value):
                    assert low - 1e-3 <= value <= high + 1e-3, (row["method"], column, row[column])
            assert_close(cell(row["tokens/s [95% CI]"])[0], exp["tokens_per_s"], 1)
    # the compact summary agrees too (2 decimals)
    summary = parse_tables("# s\n" + analysis.summary_markdown)["s"]
    expected = expected_from_csv(data, None)
    for row in summary:
        assert_close(cell(row["speedup vs hf_generate [95% CI]"])[0], expected.loc[row["method"], "speedup"], 2)


def test_paired_tests_match_scipy_and_holm(analysis, data):
    tests = pd.read_csv(analysis.tables["paired_tests"])
    fixed = [m for m in ENTSPEC_METHODS if m.startswith("fixed")]
    speed = expected_from_csv(data, None)["speedup"]
    assert analysis.references["best fixed k"] == speed.loc[fixed].idxmax()
    assert analysis.references["HF assisted (default)"] == "hf_assisted[default]"
    entropy_methods = [m for m in ENTSPEC_METHODS if not m.startswith("fixed")]
    assert sorted(tests["method"].unique()) == sorted(entropy_methods)
    assert len(tests) == 2 * len(entropy_methods)
    per_prompt = data.groupby(["method", "prompt_id"])["tokens_per_s"].mean().unstack("method")
    for row in tests.itertuples():
        res = wilcoxon(per_prompt[row.method], per_prompt[row.reference_method])
        assert row.n_pairs == N_PROMPTS
        assert row.p == pytest.approx(res.pvalue) and row.statistic == pytest.approx(res.statistic)
    np.testing.assert_allclose(tests["p_holm"], multipletests(tests["p"], method="holm")[1])
    report = parse_tables(analysis.report.read_text())
    heading = next(h for h in report if h.startswith("Paired tests"))
    assert len(report[heading]) == len(tests)


def test_figures_are_valid_images(analysis):
    for name, path in analysis.figures.items():
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert width >= 1000 and height >= 700, (name, image.size)
        assert pixels.std() > 10, name  # not blank


def test_clustering_described_in_words(analysis):
    configs, prompts = analysis.clusterings
    assert configs.skipped is None and 2 <= configs.k <= 6
    assert "hf_assisted[default]" in configs.left_out  # no per-round trace
    clustered = set(configs.labels.index)
    assert clustered == set(ENTSPEC_METHODS)
    report = analysis.report.read_text()
    for line in configs.descriptions:
        assert line.startswith("cluster ") and "baseline speed" in line and line in report


@pytest.mark.parametrize("case", ["missing_dir", "missing_results", "empty_results"])
def test_clear_error_names_the_path(tmp_path, case):
    exp = tmp_path / "exp"
    if case != "missing_dir":
        (exp / "configs").mkdir(parents=True)
    if case == "empty_results":
        (exp / "results").mkdir()
        (exp / "results" / "results.jsonl").write_text("\n")
    with pytest.raises(AnalysisError) as err:
        AnalysisPipeline(exp).run_full_analysis()
    assert isinstance(err.value, ValueError)
    expected = exp if case == "missing_dir" else exp / "results" / "results.jsonl"
    assert str(expected) in str(err.value)
    assert not (exp / "plots").exists()  # nothing written for an unusable folder


def test_cli_analyze(experiment, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", str(experiment), "--out", str(tmp_path / "out"), "--resamples", "200"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "absolute[theta_abs=0.5]" in printed and (tmp_path / "out" / "final_report.md").is_file()
    from entspec.cli import main

    assert main(["analyze", str(tmp_path / "nope")]) == 2  # one convention for every subcommand
    assert capsys.readouterr().err.startswith(f"entspec analyze: error: experiment folder not found: {tmp_path / 'nope'}")


def test_baseline_parameter(experiment):
    loaded = load_experiment(experiment)
    frame = processed_frame(loaded, baseline="autoregressive")
    assert frame.attrs["baseline"] == "autoregressive"
    np.testing.assert_allclose(frame.loc[frame["method"] == "autoregressive", "speedup"], 1.0)
    assert frame.loc[frame["method"] == "hf_generate", "speedup"].notna().all()
    with pytest.raises(AnalysisError, match="nonexistent"):
        processed_frame(loaded, baseline="nonexistent")


def test_degenerate_folders_do_not_crash(tmp_path):
    # one prompt, two seeds, no HF rows, no entropy rule: speedups vs autoregressive, no tests, no clustering
    exp = build_experiment(tmp_path / "one", n_prompts=1, seeds=(0, 1), baselines=("autoregressive",),
                           entspec_methods={"fixed[max_draft_len=2]": dict(strategy="fixed", max_draft_len=2)})
    result = AnalysisPipeline(exp, n_resamples=200).run_full_analysis()
    report = result.report.read_text()
    assert result.baseline == "autoregressive" and "clustering skipped" in report
    assert "No paired tests" in report and "HF assisted (default) = none" in report
    assert len(result.frame) == 4 and all(p.is_file() for p in result.figures.values())
    # baselines only: no speculative rows at all, no traces for the entropy figure
    exp = build_experiment(tmp_path / "base", n_prompts=2, entspec_methods={}, baselines=("hf_generate",))
    result = AnalysisPipeline(exp, n_resamples=200).run_full_analysis()
    assert "nothing to relate entropy to" in result.report.read_text()
    assert all(p.is_file() for p in result.figures.values())


def test_a_folder_of_schema_1_rows_loads_as_before(experiment, tmp_path):
    exp = tmp_path / "old"
    (exp / "results").mkdir(parents=True)
    for line in (experiment / "results" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row.pop("schema_version") == 2 and row.pop("params") is not None
        append_jsonl(exp / "results" / "results.jsonl", {"schema_version": 1, **row})  # as the old runner wrote
    old, new = load_experiment(exp), load_experiment(experiment)
    assert all(r.schema_version == 2 and r.params == {} for r in old.rows)
    assert [r.columns() for r in old.rows] == [r.columns() for r in new.rows]
    pd.testing.assert_frame_equal(processed_frame(old), processed_frame(new))


def test_rows_without_a_baseline_pair_get_nan_speedup(experiment, tmp_path):
    exp = tmp_path / "exp"
    (exp / "results").mkdir(parents=True)
    rows = [json.loads(line) for line in (experiment / "results" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if not (row["method"] == "hf_generate" and row["prompt_id"] == "p0"):
            append_jsonl(exp / "results" / "results.jsonl", row)
    loaded = load_experiment(exp)
    assert loaded.config == {} and loaded.manifest == {}  # configs/ missing is tolerated
    result = AnalysisPipeline(exp, n_resamples=200).run_full_analysis()
    frame = result.frame
    assert frame.loc[frame["prompt_id"] == "p0", "speedup"].isna().all()
    assert frame.loc[frame["prompt_id"] != "p0", "speedup"].notna().all()
    assert "no baseline run on the same prompt and seed" in result.report.read_text()


def test_cluster_items_finds_groups_and_skips_small_sets():
    features = pd.DataFrame({"speedup": [1.5, 1.45, 1.55, 0.7, 0.75, 0.72],
                             "mean_draft_length": [2.0, 2.1, 1.9, 7.9, 8.0, 8.1],
                             "acceptance_rate": [0.9, 0.88, 0.91, 0.4, 0.42, 0.41]},
                            index=[f"m{i}" for i in range(6)])
    result = cluster_items(features, "configurations")
    assert result.k == 2 and result.labels.loc[["m0", "m1", "m2"]].eq(1).all()  # cluster 1 = fastest
    assert "short drafts" in result.descriptions[0] and "above baseline speed" in result.descriptions[0]
    assert "long drafts" in result.descriptions[1] and "below baseline speed" in result.descriptions[1]
    assert cluster_items(features.iloc[:2], "configurations").skipped
    assert cluster_items(pd.DataFrame({"speedup": [1.0] * 4}, index=list("abcd")), "prompts").skipped


def test_holm_ignores_nan():
    adjusted, reject = holm([0.01, float("nan"), 0.04])
    np.testing.assert_allclose(adjusted[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert np.isnan(adjusted[1]) and not reject[1]


def test_error_bars_are_never_negative():
    from entspec.analysis.plots import _error_bars

    err = _error_bars([1.0, 0.5, float("nan")], [0.9, 0.6, 0.1], [0.9999999, 0.7, float("nan")])
    assert (err >= 0).all() and err.shape == (2, 3)
    assert err[0, 0] == pytest.approx(0.1) and err[1, 1] == pytest.approx(0.2) and err[0, 1] == 0.0


# ---------------------------------------------------------------- traces: replayed curves, the true oracle, the demo
@pytest.fixture(scope="module")
def traced(experiment, tmp_path_factory):
    """The experiment plus greedy traces of its prompts (the fixture's pair, cap 8) and a fixed cost model."""
    import shutil

    from analysis_fixtures import GENERATION, _prompts
    from entspec.replay.cost import CostModel
    from entspec.replay.trace import record_trace, trace_path
    from tiny import perturbed, tiny_llama

    root = tmp_path_factory.mktemp("traced") / "exp"
    shutil.copytree(experiment, root, ignore=shutil.ignore_patterns("plots"))
    verifier = tiny_llama(seed=0, vocab=64, sharpness=40.0)  # the pair analysis_fixtures decodes with
    drafter = perturbed(verifier, noise=0.1)
    for i, (prompt_id, category, ids) in enumerate(_prompts(N_PROMPTS, 64)):
        trace = record_trace(drafter, verifier, ids, max_new_tokens=GENERATION["max_new_tokens"], cap=8,
                             prompt_id=prompt_id, category=category)
        trace.save(trace_path(root / "traces", i, prompt_id))
    CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2],
              overhead_round_s=0.01).save(root / "traces" / "cost_model.json")
    return root


@pytest.fixture
def figures(monkeypatch):
    """The figures the analysis saves, by file name, kept for inspection."""
    from entspec.analysis import plots

    saved, save = {}, plots._save

    def keep(fig, path):
        saved[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def shown_axes(fig) -> list:
    """The figure's visible panels; each has data, none says "no data"."""
    axes = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    for ax in axes:
        assert ax.lines or ax.collections or ax.patches or ax.images, ax.get_title()
        assert not any(t.get_text().startswith("no data") for t in ax.texts), ax.get_title()
    return axes


def test_traces_give_dense_replay_curves_and_the_true_oracle_share(traced, figures):
    from entspec import EntropyConfig
    from entspec.replay.cost import load_cost_model
    from entspec.replay.engine import predicted_speedups
    from entspec.replay.trace import load_traces
    from entspec.rules import RULES

    result = AnalysisPipeline(traced, n_resamples=200).run_full_analysis()
    curves = pd.read_csv(result.tables["replay_curves"])
    assert set(curves.strategy) == {"fixed", "absolute", "adaptive", "relative"}
    traces, cost = load_traces(traced / "traces"), load_cost_model(traced / "traces")
    panels = {ax.get_title().split(":")[0]: ax for ax in shown_axes(figures["comparison_analysis.png"])}
    assert set(panels) == set(curves.strategy) | {"Acceptance rate vs mean draft length"}
    for strategy, curve in curves.groupby("strategy"):
        sweep = RULES[strategy].sweep[RULES[strategy].threshold]
        assert len(curve) >= 8 and curve.value.min() <= min(sweep) and curve.value.max() >= min(max(sweep), 8)
        drawn = [line.get_xydata() for line in panels[strategy].lines if len(line.get_xdata()) == len(curve)]
        np.testing.assert_allclose(drawn[0], curve.sort_values("value")[["value", "speedup"]].to_numpy())
    for method, kw in ENTSPEC_METHODS.items():  # the curve passes through each method's own setting
        knob = RULES[kw["strategy"]].threshold
        point = curves[(curves.strategy == kw["strategy"]) & np.isclose(curves.value, kw[knob]) & curves.measured]
        expected = predicted_speedups(traces, EntropyConfig(**kw), cost)
        assert point.speedup.item() == pytest.approx(expected["speedup"]), method
        assert point.of_oracle.item() == pytest.approx(expected["of_oracle"]) and point.of_oracle.item() <= 1
    # the report and the summary give each method's share of the true oracle beside the DISCO bound
    report = parse_tables(result.report.read_text())
    share = result.method_table.query("category == 'all'").set_index("method")["true_oracle_share"]
    for row in report["Summary (all prompts)"]:
        value = cell(row["share of true oracle (replay) [95% CI]"])[0]
        assert_close(value, share[row["method"]] if row["kind"] == "entspec" else math.nan, 3)
        assert "DISCO oracle gap (conservative bound) [95% CI]" in row
    assert "share of true oracle (replay)" in result.summary_markdown
    assert len(report["Replay on the traces"]) == curves.groupby(["strategy", "line"], dropna=False).ngroups
    oracle_panel = shown_axes(figures["performance_analysis.png"])[-1]
    assert oracle_panel.get_legend_handles_labels()[1] == ["share of the true oracle (replay, same cap)",
                                                           "DISCO oracle gap (conservative bound)"]


def test_without_traces_measured_points_only_and_no_empty_panel(experiment, tmp_path, figures):
    result = AnalysisPipeline(experiment, tmp_path / "out", n_resamples=200).run_full_analysis()
    assert "replay_curves" not in result.tables and not (tmp_path / "out" / "replay_curves.csv").exists()
    report = result.report.read_text()
    assert "Replay on the traces" not in report and "share of true oracle" not in report
    assert "DISCO oracle gap (conservative bound)" in report
    titles = [ax.get_title() for ax in shown_axes(figures["comparison_analysis.png"])]
    assert len(titles) == len({kw["strategy"] for kw in ENTSPEC_METHODS.values()}) + 1
    assert len(shown_axes(figures["performance_analysis.png"])) == 4


def test_demo_records_traces_then_runs_and_analyzes(tmp_path):
    """`entspec demo` on a tiny pair: traces first, then the run, then an analysis with replayed curves."""
    import yaml

    from entspec.cli import main
    from entspec.experiment.cli import machine_dtype
    from tiny import save_tiny_pair

    drafter, verifier = save_tiny_pair(tmp_path / "pair")
    out = tmp_path / "demo"
    sets = dict(drafter_model_path=drafter, verifier_model_path=verifier, num_samples=3, max_new_tokens=12,
                max_sequence_length=200, output_dir=str(out), threads=1, warmup_tokens=0)
    assert main(["demo", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]) == 0
    assert len(list((out / "traces").glob("*.npz"))) == 3
    assert yaml.safe_load((out / "configs" / "experiment.yaml").read_text())["dtype"] == machine_dtype()
    assert (out / "plots" / "replay_curves.csv").is_file()
    assert "share of true oracle (replay)" in (out / "plots" / "final_report.md").read_text()
