"""executor: ray — the local runner's rows from Ray workers; a killed worker or driver loses and repeats nothing.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; every test uses tiny random models.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from entspec.cli import main
from entspec.engine.config import ConfigError
from entspec.experiment import ExperimentConfig, ExperimentRunner
from entspec.experiment.ray_executor import WorkerError, check_address
from entspec.records import GenerationResult, ResultRow, read_jsonl
from tiny import save_tiny_pair


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return save_tiny_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for the module; yields its address (other drivers connect to it)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def config(tiny_pair, out, **kw):
    """2 methods x prompts x 2 seeds, sampled (so the seeds matter and tokens pin down the random stream)."""
    drafter, verifier = tiny_pair
    base = dict(drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=3,
                max_new_tokens=12, max_sequence_length=160, output_dir=str(out), experiment_name="ray",
                baselines=False, analyze=False, warmup_tokens=2, temperature=0.7, seeds=[0, 1],
                grid={"base": {"max_draft_len": 4}, "axes": {"strategy": ["absolute", "adaptive"]}},
                executor="ray", ray_workers=2)
    return ExperimentConfig(**{**base, **kw})


def rows_of(path):
    return list(read_jsonl(path))


def assert_each_unit_once(rows, expected):
    keys = [r["unit_key"] for r in rows]
    assert len(keys) == len(set(keys)) == expected


def test_two_workers_give_every_unit_once_with_the_local_tokens(tiny_pair, ray_cluster, tmp_path):
    cfg = config(tiny_pair, tmp_path / "ray")
    runner = ExperimentRunner(cfg, progress=False)
    rows = rows_of(runner.run())
    assert_each_unit_once(rows, 2 * 3 * 2)
    local = rows_of(ExperimentRunner(config(tiny_pair, tmp_path / "local", executor="local"), progress=False).run())
    assert {r["unit_key"]: r["result"]["new_tokens"] for r in rows} == \
        {r["unit_key"]: r["result"]["new_tokens"] for r in local}
    assert all("worker" not in r for r in local)  # the local executor's rows are unchanged
    # every row says where it ran; a prompt's units all ran on one worker, in the local runner's order
    assert all({"host", "device", "pid"} <= set(r["worker"]) for r in rows)
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    local_order = [u.key for u in runner.units()]
    for prompt_rows in by_prompt.values():
        assert len({r["worker"]["pid"] for r in prompt_rows}) == 1
        keys = [r["unit_key"] for r in prompt_rows]
        assert keys == sorted(keys, key=local_order.index)
    assert len({r["worker"]["pid"] for r in rows}) == 2
    manifest = (tmp_path / "ray" / "configs" / "manifest.json").read_text()
    assert '"executor": "ray"' in manifest and '"workers"' in manifest
    assert len(rows_of(ExperimentRunner(cfg, progress=False).run())) == 12  # nothing left: no worker starts


def wait_for_rows(path, n, running, timeout=600):
    """Until ``path`` holds ``n`` rows; fails at once if the run ends first. The timeout is generous on purpose:
    on a loaded 2-core machine the workers' start and first unit took over 90 s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ended = not running()  # read before the rows: a run that ended has written all it will
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert not ended, f"{path}: the run ended with fewer than {n} rows"
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {n} rows after {timeout} s")


def test_a_worker_killed_mid_run_is_restarted_and_its_units_retried(tiny_pair, ray_cluster, tmp_path):
    cfg = config(tiny_pair, tmp_path / "exp", num_samples=8, max_new_tokens=48)
    results = tmp_path / "exp" / "results" / "results.jsonl"
    outcome = []
    driver = threading.Thread(target=lambda: outcome.append(_run_or_error(cfg)))
    driver.start()
    wait_for_rows(results, 1, driver.is_alive)
    victim = rows_of(results)[0]["worker"]["pid"]
    os.kill(victim, signal.SIGKILL)
    driver.join(timeout=600)
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    rows = rows_of(results)
    assert_each_unit_once(rows, 2 * 8 * 2)
    pids = {r["worker"]["pid"] for r in rows}
    assert victim in pids and len(pids) == 3  # the two first workers, then the victim's restart


def _run_or_error(cfg):
    try:
        return ExperimentRunner(cfg, progress=False).run()
    except BaseException as err:  # noqa: BLE001 - handed to the test thread
        return err


DRIVER = """
import sys, yaml
from entspec.experiment import ExperimentConfig, ExperimentRunner
ExperimentRunner(ExperimentConfig.from_dict(yaml.safe_load(open({config!r}))), progress=False).run()
"""


def test_the_driver_killed_mid_run_then_rerun_gives_every_row_exactly_once(tiny_pair, ray_cluster, tmp_path):
    cfg = config(tiny_pair, tmp_path / "exp", num_samples=8, max_new_tokens=48, ray_address=ray_cluster)
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    results = tmp_path / "exp" / "results" / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(config=str(path))],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for_rows(results, 4, lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = len(rows_of(results))
    assert 4 <= partial < 32, "the driver should have been killed in the middle"
    rows = rows_of(ExperimentRunner(cfg, progress=False).run())  # this process is already connected
    assert_each_unit_once(rows, 2 * 8 * 2)


def test_a_model_missing_on_a_node_is_one_line_naming_the_node(tiny_pair, ray_cluster, tmp_path):
    cfg = config(tiny_pair, tmp_path / "exp", drafter_model_path=str(tmp_path / "absent"), ray_workers=1)
    with pytest.raises(WorkerError, match=r"^worker on [^ ]+: .*absent: no such file or folder$"):
        ExperimentRunner(cfg, progress=False).run()
    assert not (tmp_path / "exp" / "results" / "results.jsonl").exists()


class FakeRay:
    """Just enough of ``ray`` for the dispatch loop: refs are the rows themselves, ready at once."""

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.row


class FakeRef:
    def __init__(self, row):
        self.row = row


class FakeWorker:
    """Turns a unit key into a minimal results row at once."""

    def __init__(self):
        self.run, self.calls = self, []

    def remote(self, key):
        self.calls.append(key)
        empty = GenerationResult(new_tokens=[], rounds=[], prompt_len=0, wall_time_s=0.0, prefill_time_s=0.0,
                                 time_to_first_token_s=0.0, finish_reason="empty")
        return FakeRef(ResultRow(method="fake", method_kind="entspec", strategy="fixed", prompt_id="p",
                                 category="c", seed=0, config={}, result=empty, unit_key=key,
                                 worker={"host": "h", "pid": id(self), "device": "cpu", "device_name": "cpu",
                                         "dtype": "float32"}))


def test_the_driver_writes_a_unit_once_when_a_retry_races_a_late_result(tiny_pair, tmp_path):
    pytest.importorskip("ray")
    from entspec.experiment.ray_executor import _by_prompt, _Driver

    runner = ExperimentRunner(config(tiny_pair, tmp_path / "exp"), progress=False)
    runner._prepare_output_dir()
    runner.prompts = runner.load_prompts()
    units = runner.units()
    done, todo = units[:1], units[1:]  # the first unit is already in the file
    runner.results_path.write_text(f'{{"unit_key": "{done[0].key}"}}\n')
    groups = _by_prompt(todo)
    groups.insert(1, groups[0][:2])  # two of them sent again while the first copies are still running
    workers = [FakeWorker(), FakeWorker()]
    _Driver(FakeRay(), runner, workers, units, todo, groups).run()
    keys = [r["unit_key"] for r in read_jsonl(runner.results_path)]
    assert sorted(keys) == sorted(u.key for u in units)  # every unit once: the late copies were dropped
    assert workers[1].calls[:2] == workers[0].calls[:2] == [u.key for u in todo[:2]]  # both really ran
    assert workers[0].calls[:3] == [u.key for u in todo[:3]]  # a prompt's remaining units, in order


# ---------------------------------------------------------------- bad input: one line naming the setting
def cli_error(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def config_file(tiny_pair, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(config(tiny_pair, tmp_path / "exp", executor="local", ray_workers=None).to_yaml())
    return str(path)


def test_zero_workers_is_refused_naming_the_setting(config_file, capsys):
    line = cli_error(capsys, ["run", config_file, "--executor", "ray", "--workers", "0"])
    assert line == "entspec run: error: ray_workers: must be >= 1 or null (got 0)"
    line = cli_error(capsys, ["run", config_file, "--workers", "2"])
    assert line.startswith("entspec run: error: ray_workers: only used with --executor ray")


def test_ray_not_installed_is_refused_naming_the_setting(config_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    line = cli_error(capsys, ["run", config_file, "--executor", "ray"])
    assert line.startswith("entspec run: error: executor: Ray is not installed here")


def test_an_unreachable_address_is_refused_at_once(config_file, capsys):
    started = time.perf_counter()
    line = cli_error(capsys, ["run", config_file, "--executor", "ray", "--address", "127.0.0.1:1"])
    assert line.startswith("entspec run: error: ray_address: no Ray cluster answers at 127.0.0.1:1")
    assert time.perf_counter() - started < 10
    with pytest.raises(ConfigError, match="^ray_address: expected auto, HOST:PORT"):
        check_address("head-node")
    with pytest.raises(ConfigError, match="^executor: must be local or ray"):
        ExperimentConfig(executor="slurm")
