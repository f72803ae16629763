"""ExperimentRunner: a grid completes, a SIGKILLed run resumes without loss or duplicates, configs validate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from entspec.engine.config import ConfigError
from entspec.experiment import ExperimentConfig, ExperimentRunner
from entspec.records import SCHEMA_VERSION, read_jsonl, read_rows
from tiny import save_tiny_pair


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return save_tiny_pair(tmp_path_factory.mktemp("pair"))


def grid_config(tiny_pair, out, **kw):
    drafter, verifier = tiny_pair
    base = dict(drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=3,
                max_new_tokens=12, max_sequence_length=160, output_dir=str(out), experiment_name="grid",
                baselines=False, analyze=False, warmup_tokens=2,
                grid={"base": {"max_draft_len": 4}, "axes": {"strategy": ["absolute", "adaptive"],
                                                             "theta_abs": [0.5, 1.5]}})
    return ExperimentConfig(**{**base, **kw})


def test_grid_of_two_by_two_on_three_prompts_completes(tiny_pair, tmp_path):
    runner = ExperimentRunner(grid_config(tiny_pair, tmp_path / "exp"), progress=False)
    path = runner.run()
    rows = list(read_rows(path))
    assert len(rows) == 4 * 3
    assert {r.method for r in rows} == {"absolute[max_draft_len=4,theta_abs=0.5]",
                                        "absolute[max_draft_len=4,theta_abs=1.5]",
                                        "adaptive[max_draft_len=4,theta_abs=0.5]",
                                        "adaptive[max_draft_len=4,theta_abs=1.5]"}
    assert {r.category for r in rows} == {"code", "math", "chat"}
    row = rows[0]
    assert row.schema_version == SCHEMA_VERSION == 2 and row.config["max_new_tokens"] == 12
    assert row.config["strategy"] in ("absolute", "adaptive") and row.result.rounds
    # method identity as fields: kind, strategy and the declared parameters
    assert {(r.method_kind, r.strategy, r.params["theta_abs"], r.params["max_draft_len"]) for r in rows} == \
        {("entspec", s, t, 4) for s in ("absolute", "adaptive") for t in (0.5, 1.5)}
    assert all(r.unit_key == f"{r.method}|{r.prompt_id}|{r.seed}" and r.worker is None for r in rows)
    exp = tmp_path / "exp"
    manifest = json.loads((exp / "configs" / "manifest.json").read_text())
    assert {"git_hash", "versions", "device", "date"} <= set(manifest)
    assert ExperimentConfig.from_yaml(exp / "configs" / "experiment.yaml") == runner.config
    assert json.loads((exp / "checkpoints" / "progress.json").read_text())["done"] == 12
    # a rerun finds everything done and adds nothing
    assert len(list(read_jsonl(ExperimentRunner(runner.config, progress=False).run()))) == 12


def test_baselines_and_declared_methods_run_interleaved(tiny_pair, tmp_path):
    cfg = grid_config(tiny_pair, tmp_path / "exp", grid=None, baselines=True, num_samples=2,
                      methods=[{"strategy": "fixed", "max_draft_len": [2, 3]},
                               {"kind": "hf_assisted", "num_assistant_tokens": 3, "confidence_threshold": 0.0}])
    runner = ExperimentRunner(cfg, progress=False)
    rows = list(read_rows(runner.run()))
    kinds = [r.method_kind for r in rows]
    assert kinds.count("hf_generate") == kinds.count("autoregressive") == 2 and kinds.count("hf_assisted") == 4
    assert {(r.method, r.strategy) for r in rows if r.method_kind != "entspec"} == {
        ("hf_generate", "hf_generate"), ("autoregressive", "autoregressive"),
        ("hf_assisted[default]", "hf_assisted"),
        ("hf_assisted[confidence_threshold=0.0,num_assistant_tokens=3]", "hf_assisted")}
    assert {r.params_text for r in rows if r.method_kind == "hf_assisted"} == \
        {"", "confidence_threshold=0.0,num_assistant_tokens=3"}
    first_prompt = [r.method for r in rows[:6]]
    second_prompt = [r.method for r in rows[6:]]
    assert sorted(first_prompt) == sorted(second_prompt) and first_prompt != second_prompt  # rotated order
    # greedy: every method gives the verifier's own tokens on the same prompt
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r.prompt_id, set()).add(tuple(r.result.new_tokens))
    assert all(len(outputs) == 1 for outputs in by_prompt.values())


KILL_SCRIPT = """
import sys, yaml
sys.path.insert(0, {tests!r})
from entspec.experiment import ExperimentConfig, ExperimentRunner
cfg = ExperimentConfig.from_dict(yaml.safe_load(open({config!r})))
ExperimentRunner(cfg, progress=False).run()
"""


def test_sigkill_mid_run_then_rerun_gives_every_row_exactly_once(tiny_pair, tmp_path):
    cfg = grid_config(tiny_pair, tmp_path / "exp", max_new_tokens=40, num_samples=6)
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(cfg.to_yaml())
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), config=str(config_path))
    results = tmp_path / "exp" / "results" / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = results.read_text().count("\n")
    assert 5 <= partial < 24, "the run should have been killed in the middle"
    rows = list(read_jsonl(ExperimentRunner(cfg, progress=False).run()))
    keys = [r["unit_key"] for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 6


def test_torn_last_line_is_repaired_before_appending(tiny_pair, tmp_path):
    cfg = grid_config(tiny_pair, tmp_path / "exp", num_samples=1)
    path = ExperimentRunner(cfg, progress=False).run()
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    rows = list(read_jsonl(ExperimentRunner(cfg, progress=False).run()))
    assert len(rows) == 4 and len({r["unit_key"] for r in rows}) == 4


def test_resuming_with_different_generation_settings_is_refused(tiny_pair, tmp_path):
    ExperimentRunner(grid_config(tiny_pair, tmp_path / "exp", num_samples=1), progress=False).run()
    with pytest.raises(ConfigError, match="^max_new_tokens:"):
        ExperimentRunner(grid_config(tiny_pair, tmp_path / "exp", num_samples=1, max_new_tokens=20),
                         progress=False).run()


MALFORMED = [
    ({"temperature": -0.5}, "temperature"),
    ({"num_samples": 0}, "num_samples"),
    ({"num_samples": "ten"}, "num_samples"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_sequence_length": 10, "max_new_tokens": 64}, "max_sequence_length"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"dtype": "int8"}, "dtype"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, "one"]}, "seeds"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"methods": [{"strategy": "absolute", "theta_abs": -1.0}]}, r"methods\[0\]\.theta_abs"),
    ({"methods": [{"strategy": "fixed", "max_draft_len": 0}]}, r"methods\[0\]\.max_draft_len"),
    ({"methods": [{"strategy": "telepathy"}]}, r"methods\[0\]\.strategy"),
    ({"methods": [{"theta_ab": 1.0}]}, r"methods\[0\]\.theta_ab"),
    ({"methods": [{"kind": "beam"}]}, r"methods\[0\]\.kind"),
    ({"methods": [{"kind": "hf_assisted", "num_assistant_tokens": 0}]}, r"methods\[0\]\.num_assistant_tokens"),
    ({"methods": [{"kind": "hf_assisted", "schedule": "sometimes"}]}, r"methods\[0\]\.schedule"),
    ({"methods": ["absolute"]}, r"methods: expected list\[dict"),
    ({"grid": {"axes": {"theta_abs": [1.0, -2.0]}}}, "grid.theta_abs"),
    ({"grid": {"base": {}}}, "grid.axes"),
    ({"ablation": {"base": {}, "vary": {"entropy_type": ["shannon", "gini"]}}}, "ablation.vary.entropy_type"),
    ({"baselines": "yes"}, "baselines"),
    ({"baselines": False}, "methods"),
    ({"experiment_name": " "}, "experiment_name"),
]


@pytest.mark.parametrize("change,field", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_config_gives_one_line_error_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=f"^{field}") as info:
        ExperimentConfig.from_dict(change)
    assert "\n" not in str(info.value)


def test_yaml_loading_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"num_samples": 4, "methods": [{"strategy": "svip"}]}))
    cfg = ExperimentConfig.from_yaml(path, overrides=["temperature=0.7", "seeds=[1, 2]"])
    assert cfg.num_samples == 4 and cfg.temperature == 0.7 and cfg.seeds == [1, 2]
    with pytest.raises(ConfigError, match="not found"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("num_samples: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentConfig.from_yaml(path)
    path.write_text("num_samples: 2\n")
    with pytest.raises(ConfigError, match="expected key=value"):
        ExperimentConfig.from_yaml(path, overrides=["oops"])


def test_example_configs_in_the_repo_are_valid():
    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        ExperimentConfig.from_yaml(path)


def test_cli_run_reports_bad_config_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("temperature: -1\n")
    proc = subprocess.run([sys.executable, "-m", "entspec", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("entspec run: error: temperature:")


def test_cache_options_are_validated_config_fields():
    from entspec.engine.config import ConfigError

    cfg = ExperimentConfig(kv_cache="static", compile=True, baselines=False, methods=[{"strategy": "fixed"}])
    assert cfg.generation_settings()["kv_cache"] == "static" and cfg.generation_settings()["compile"] is True
    with pytest.raises(ConfigError, match="^compile: needs kv_cache='static'"):
        ExperimentConfig(compile=True)
    with pytest.raises(ConfigError, match="^kv_cache: must be one of"):
        ExperimentConfig(kv_cache="paged")


def test_batch_size_runs_batches_with_one_row_per_unit_and_resumes_a_partial_batch(tiny_pair, tmp_path):
    """batch_size 2 on 3 prompts: batches of 2 and 1 per method; greedy rows equal the batch_size 1 run's; a
    results file missing one row of a batch reruns that batch and appends only the missing row."""
    kw = dict(grid=None, baselines=True, methods=[{"strategy": "adaptive", "max_draft_len": 4}])
    single = {r.unit_key: r for r in read_rows(ExperimentRunner(
        grid_config(tiny_pair, tmp_path / "b1", **kw), progress=False).run())}
    cfg = grid_config(tiny_pair, tmp_path / "b2", batch_size=2, **kw)
    runner = ExperimentRunner(cfg, progress=False)
    assert "hf_assisted" not in {m.kind for m in runner.methods}  # transformers: batch size 1 only
    rows = list(read_rows(runner.run()))
    assert len(rows) == 3 * 3
    assert sorted(r.result.batch["size"] for r in rows) == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert all(r.result.new_tokens == single[r.unit_key].result.new_tokens for r in rows)
    assert all(r.config["batch_size"] == 2 for r in rows)
    # drop one row of a two-row batch: the rerun runs that batch again and appends that row only
    results = tmp_path / "b2" / "results" / "results.jsonl"
    lines = results.read_text().splitlines()
    victim = next(i for i, r in enumerate(rows) if r.result.batch["size"] == 2 and r.method_kind == "entspec")
    results.write_text("\n".join(lines[:victim] + lines[victim + 1:]) + "\n")
    again = list(read_rows(ExperimentRunner(cfg, progress=False).run()))
    assert sorted(r.unit_key for r in again) == sorted(r.unit_key for r in rows)
    assert again[-1].unit_key == rows[victim].unit_key and again[-1].result.batch["size"] == 2


@pytest.mark.parametrize("change,message", [
    (dict(batch_size=0), "batch_size: must be >= 1"),
    (dict(batch_size=2, methods=[{"kind": "hf_assisted"}]), "methods\\[0\\].kind: hf_assisted runs at batch_size 1"),
    (dict(batch_size=2, kv_cache="static"), "batch_size: .*kv_cache: dynamic"),
])
def test_batch_size_is_validated_in_one_line(change, message, tiny_pair, tmp_path):
    with pytest.raises(ConfigError, match=message):
        grid_config(tiny_pair, tmp_path / "x", **change)


def test_resuming_with_another_batch_size_is_refused(tiny_pair, tmp_path):
    cfg = grid_config(tiny_pair, tmp_path / "exp", num_samples=2, max_new_tokens=4)
    ExperimentRunner(cfg, progress=False).run()
    other = grid_config(tiny_pair, tmp_path / "exp", num_samples=2, max_new_tokens=4, batch_size=2)
    with pytest.raises(ConfigError, match="batch_size: .* holds results made with batch_size=1"):
        ExperimentRunner(other, progress=False).run()


def test_batch_stop_cost_measures_the_batch_costs_once_and_reuses_them(tiny_pair, tmp_path):
    """A batch_stop="cost" method: the runner measures configs/batch_costs.json before timing, every row equals
    the verifier's greedy output (the batch_size 1 run's), and a resumed run reads the saved costs."""
    kw = dict(grid=None, baselines=False, methods=[{"strategy": "fixed", "max_draft_len": 4, "batch_stop": "cost"}])
    single = {r.unit_key: r for r in read_rows(ExperimentRunner(
        grid_config(tiny_pair, tmp_path / "b1", **kw), progress=False).run())}
    cfg = grid_config(tiny_pair, tmp_path / "b2", batch_size=2, **kw)
    rows = list(read_rows(ExperimentRunner(cfg, progress=False).run()))
    costs = tmp_path / "b2" / "configs" / "batch_costs.json"
    assert json.loads(costs.read_text())["verify_rows"] == [1, 2]
    assert all(r.result.new_tokens == single[r.unit_key].result.new_tokens for r in rows)
    assert all(r.config["batch_stop"] == "cost" for r in rows)
    before = costs.stat().st_mtime_ns
    results = tmp_path / "b2" / "results" / "results.jsonl"
    results.write_text("\n".join(results.read_text().splitlines()[:-1]) + "\n")
    runner = ExperimentRunner(cfg, progress=False)
    assert len(list(read_rows(runner.run()))) == 3
    assert costs.stat().st_mtime_ns == before and runner.costs is not None
    assert json.loads((tmp_path / "b1" / "configs" / "batch_costs.json").read_text())["verify_rows"] == [1]
    assert {r.result.batch["size"] for r in single.values()} == {1}  # batch size 1: the batched loop, one row


def test_each_batch_layout_gets_its_own_measured_costs_and_a_swapped_file_is_refused(tiny_pair, tmp_path):
    methods = [{"strategy": "fixed", "max_draft_len": 3, "batch_stop": "cost"},
               {"strategy": "fixed", "max_draft_len": 3, "batch_stop": "cost", "batch_layout": "packed"}]
    cfg = grid_config(tiny_pair, tmp_path / "b2", batch_size=2, grid=None, baselines=False, methods=methods)
    rows = list(read_rows(ExperimentRunner(cfg, progress=False).run()))
    folder = tmp_path / "b2" / "configs"
    assert json.loads((folder / "batch_costs.json").read_text()).get("layout", "padded") == "padded"
    assert json.loads((folder / "batch_costs-packed.json").read_text())["layout"] == "packed"
    by_method = {}
    for r in rows:
        by_method.setdefault(r.config.get("batch_layout", "padded"), {})[r.prompt_id] = r.result.new_tokens
    assert by_method["packed"] == by_method["padded"]  # greedy: the layout never changes the output
    (folder / "batch_costs-packed.json").write_text((folder / "batch_costs.json").read_text())
    (tmp_path / "b2" / "results" / "results.jsonl").write_text("")
    with pytest.raises(ValueError, match="batch_costs-packed.json: measured in the padded batch layout, not packed"):
        ExperimentRunner(cfg, progress=False).run()


def test_a_resume_warms_up_only_the_methods_with_units_left(tiny_pair, tmp_path, monkeypatch):
    ExperimentRunner(grid_config(tiny_pair, tmp_path / "exp", num_samples=2, max_new_tokens=4), progress=False).run()
    calls, original = [], ExperimentRunner.warm_up

    def spy(self, methods=None):
        calls.append(methods)
        return original(self, methods)

    monkeypatch.setattr(ExperimentRunner, "warm_up", spy)
    more = grid_config(tiny_pair, tmp_path / "exp", num_samples=2, max_new_tokens=4,
                       methods=[{"strategy": "fixed", "max_draft_len": 2}])
    assert len(list(read_rows(ExperimentRunner(more, progress=False).run()))) == 5 * 2
    assert calls == [{"fixed[max_draft_len=2]"}]
