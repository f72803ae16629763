"""Trace replay reproduces the engine round for round; the true oracle is a lower bound on every rule's time."""

import itertools

import numpy as np
import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.replay.cost import CostModel
from entspec.replay.engine import plain_decoding, replay, true_oracle
from entspec.replay.trace import Trace, load_traces, record_trace, trace_path
from entspec.engine.stopping import RULES
from tiny import perturbed, tiny_llama

NEW_TOKENS, CAP = 24, 8
COST = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.01)


def settings(name: str) -> list[dict]:
    """Two settings of every registered rule: its sweep's first and last threshold value, two caps."""
    info = RULES[name]
    knob = info.threshold
    values = info.sweep.get(knob, (None,))
    out = []
    for value, cap in ((values[0], 4), (values[-1], CAP)):
        cfg = {"strategy": name, "max_draft_len": cap, "theta_abs": 1.0}
        if knob and knob != "max_draft_len" and value is not None:
            cfg[knob] = value
        out.append(cfg)
    if name == "goodput":  # the two-feature and next-token calibrations too (their online updates included)
        out.append({"strategy": name, "max_draft_len": CAP, "calib_prob": 1.5, "next_intercept": 1.0,
                    "next_slope": -0.8, "next_prob": 0.5})
        out.append({"strategy": name, "max_draft_len": CAP, "calib_curve": [[0.0, 0.99], [1.0, 0.7], [3.0, 0.2]]})
    return out


@pytest.fixture(scope="module")
def pair_and_traces():
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0)
    verifier.generation_config.eos_token_id = 22  # some outputs end early: the EOS paths are replayed too
    drafter = perturbed(verifier, noise=0.05)
    gen = torch.Generator().manual_seed(3)
    cases = []
    for i in range(8):
        prompt = torch.randint(6, verifier.config.vocab_size, (1, 2 + i), generator=gen)
        trace = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=CAP, prompt_id=f"p{i}")
        cases.append((prompt, trace))
    return drafter, verifier, cases


def test_trace_matches_engine_statistics(pair_and_traces):
    drafter, verifier, cases = pair_and_traces
    for prompt, trace in cases:
        plain = EntropyBasedSpeculativeDecoder.autoregressive(verifier).generate(prompt, NEW_TOKENS)
        assert trace.output.tolist() == plain.new_tokens
        # a fixed-length run's first drafted token is the drafter's greedy token at position 0
        res = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=1)
                                             ).generate(prompt, NEW_TOKENS)
        assert res.rounds[0].draft_token_probs[0] == pytest.approx(float(trace.token_prob[0]), rel=1e-4)
        assert res.rounds[0].entropies[0] == pytest.approx(float(trace.entropy[0, 0]), rel=1e-4, abs=1e-5)
    assert sum(len(t.cont_pos) for _, t in cases) > 0, "the drafter must be wrong somewhere for this test to bite"
    assert any(len(t) < NEW_TOKENS for _, t in cases), "some output must end at EOS for this test to bite"


def test_continuations_equal_sequential_greedy(pair_and_traces):
    drafter, _, cases = pair_and_traces
    prompt, trace = next((p, t) for p, t in cases if len(t.cont_pos) > 0)
    for row, t in enumerate(trace.cont_pos.tolist()[:3]):
        prefix = torch.cat([prompt, torch.tensor([trace.output[:t].tolist() + [int(trace.draft_token[t])]])], dim=1)
        ref = drafter.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=CAP - 1,
                               do_sample=False, eos_token_id=None)
        assert trace.cont_token[row].tolist() == ref[0, prefix.shape[1]:].tolist()


@pytest.mark.parametrize("prefill", ["upfront", "deferred"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_replay_reproduces_engine_rounds(name, prefill, pair_and_traces):
    drafter, verifier, cases = pair_and_traces
    for cfg_dict in settings(name):
        cfg = EntropyConfig(**cfg_dict, drafter_prefill=prefill)
        for prompt, trace in cases:
            engine = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(prompt, NEW_TOKENS)
            replayed = replay(trace, cfg, COST)
            expected = [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
            assert replayed.rounds() == expected, (cfg_dict, trace.meta.prompt_id)
            assert replayed.stop_reasons == [r.stop_reason for r in engine.rounds]
            assert replayed.thresholds == [r.threshold if r.threshold is None else pytest.approx(r.threshold, rel=1e-5)
                                           for r in engine.rounds]


def test_true_oracle_bounds_every_rule(pair_and_traces):
    _, _, cases = pair_and_traces
    for _, trace in cases:
        oracle = true_oracle(trace, COST)
        oracle_cap4 = true_oracle(trace, COST, cap=4)
        assert oracle.time_s <= oracle_cap4.time_s + 1e-12
        assert oracle_cap4.time_s <= plain_decoding(trace, COST).time_s + COST.prefill(trace.meta.prompt_len)
        for name in RULES:
            for cfg_dict in settings(name):
                cfg = EntropyConfig(**{**cfg_dict, "max_draft_len": 4})
                assert oracle_cap4.time_s <= replay(trace, cfg, COST).time_s + 1e-9


def test_true_oracle_beats_brute_force_on_small_case():
    """On a hand-made agreement pattern the DP equals an exhaustive search over draft lengths."""
    match = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
    n = len(match)
    trace = _fake_trace(match)
    best = float("inf")
    runs = trace.agreement_run.tolist()
    for lengths in itertools.product(range(4), repeat=n):
        t, time, i = 0, COST.prefill(0), 0
        ok = True
        while t < n:
            j = lengths[i]
            if j > min(runs[t], n - t - 1):
                ok = False
                break
            time += COST.round_time(j, first=t == 0)
            t += j + 1
            i += 1
        if ok:
            best = min(best, time)
    assert true_oracle(trace, COST, cap=3).time_s == pytest.approx(best)


def _fake_trace(match: np.ndarray) -> Trace:
    from entspec.replay.trace import TraceMeta

    n = len(match)
    output = np.arange(10, 10 + n)
    draft = np.where(match, output, 1)
    meta = TraceMeta("fake", "", 0, n, [], 4, 2.0, 10)
    wrong = np.flatnonzero(~match)
    return Trace(meta, output, draft, np.ones(n, np.float32), np.ones(n, np.float32), np.zeros((n, 3), np.float32),
                 wrong, np.ones((len(wrong), 3), np.int64), np.ones((len(wrong), 3), np.float32),
                 np.zeros((len(wrong), 3, 3), np.float32))


def test_trace_files_round_trip(tmp_path, pair_and_traces):
    _, _, cases = pair_and_traces
    for i, (_, trace) in enumerate(cases[:2]):
        trace.save(trace_path(tmp_path, i, trace.meta.prompt_id))
    loaded = load_traces(tmp_path)
    assert [t.meta.prompt_id for t in loaded] == ["p0", "p1"]
    for a, (_, b) in zip(loaded, cases):
        assert np.array_equal(a.cont_token, b.cont_token) and np.allclose(a.entropy, b.entropy)
    (tmp_path / "0000-p0.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="0000-p0.npz: not a readable entspec trace"):
        load_traces(tmp_path)


def test_replay_refuses_a_cap_beyond_the_trace(pair_and_traces):
    _, _, cases = pair_and_traces
    with pytest.raises(ValueError, match="max_draft_len: 9 exceeds the trace's cap 8"):
        replay(cases[0][1], EntropyConfig(strategy="fixed", max_draft_len=9), COST)


def test_trace_and_tune_commands_on_a_tiny_experiment(tmp_path, capsys):
    """`entspec trace` then `entspec tune`: traces, cost model, every rule swept, a runnable tuned.yaml."""
    import yaml

    from entspec.cli import main
    from entspec.experiment import ExperimentConfig
    from tiny import tiny_experiment_yaml

    config = tiny_experiment_yaml(tmp_path)
    assert main(["trace", str(config), "--cap", "12"]) == 0
    traces = sorted((tmp_path / "exp" / "traces").glob("*.npz"))
    assert len(traces) == 6 and (tmp_path / "exp" / "traces" / "cost_model.json").is_file()
    assert main(["trace", str(config), "--cap", "12"]) == 0  # resumable: nothing left to do
    assert main(["tune", str(tmp_path / "exp")]) == 0
    best = __import__("pandas").read_csv(tmp_path / "exp" / "tune" / "best.csv")
    assert set(best.strategy) == set(RULES)
    assert (best.of_oracle.dropna() <= 1 + 1e-9).all() and (best.of_oracle_at_cap.dropna() <= 1 + 1e-9).all()
    tuned = yaml.safe_load((tmp_path / "exp" / "tune" / "tuned.yaml").read_text())
    assert tuned["methods"][0]["strategy"] == "fixed" and tuned["methods"][-1]["gate"] is True
    assert len(tuned["methods"]) in (6, 7) and "goodput" in {m["strategy"] for m in tuned["methods"]}
    assert len(tuned["exclude_prompts"]) == 6  # confirmation never reuses a tuning prompt
    ExperimentConfig(**tuned)  # a valid experiment, ready for `entspec run`
    # --given: settings from elsewhere judged on the same split; the chosen ones given back get the chosen figures
    given_out = tmp_path / "given"
    assert main(["tune", str(tmp_path / "exp"), "--given", str(tmp_path / "exp" / "tune" / "tuned.yaml"),
                 "--out", str(given_out)]) == 0
    given = __import__("pandas").read_csv(given_out / "given.csv")
    assert len(given) == len(tuned["methods"])
    chosen = best[(best.category == "all") & (best.strategy == "fixed")].iloc[0]
    again = given[given.params == chosen.params].iloc[0]
    for column in ("tune_speedup", "held_out_speedup", "of_oracle_at_cap", "of_oracle"):
        assert again[column] == pytest.approx(chosen[column])
    assert "## Given configurations" in (given_out / "report.md").read_text()
    too_long = tmp_path / "long.yaml"
    too_long.write_text(config.read_text().split("methods:")[0] + "methods:\n  - {strategy: svip, max_draft_len: 20}\n")
    assert main(["tune", str(tmp_path / "exp"), "--given", str(too_long), "--out", str(tmp_path / "x")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().split("methods:")[0] + "methods:\n  - {strategy: svip, bogus: 1}\n")
    assert main(["tune", str(tmp_path / "exp"), "--given", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert f"--given {bad}: methods[0].bogus" in capsys.readouterr().err


def test_analysis_replays_real_rows_on_their_traces(tmp_path):
    """An experiment folder with traces/: every greedy entspec row is replayed exactly, its share of the true
    oracle is in (0, 1], and the report names the true oracle."""
    from entspec.analysis import AnalysisPipeline
    from entspec.analysis.load import load_experiment, processed_frame
    from entspec.experiment import ExperimentConfig, ExperimentRunner
    from entspec.replay.record import record_experiment
    from tiny import save_tiny_pair

    drafter, verifier = save_tiny_pair(tmp_path / "pair")
    config = ExperimentConfig(
        drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=3,
        max_new_tokens=16, max_sequence_length=200, output_dir=str(tmp_path / "exp"), experiment_name="t",
        baselines=True, analyze=False, warmup_tokens=0, threads=1, dtype="float32",
        methods=[{"strategy": "fixed", "max_draft_len": 3}, {"strategy": "absolute", "theta_abs": 1.0},
                 {"strategy": "goodput", "max_draft_len": 12}])
    ExperimentRunner(config, progress=False).run()
    record_experiment(config, cap=12, progress=False)
    frame = processed_frame(load_experiment(tmp_path / "exp"))
    spec = frame[frame.method_kind == "entspec"]
    assert len(spec) == 9 and (spec.replay_exact == 1.0).all()
    assert ((spec.true_oracle_share > 0) & (spec.true_oracle_share <= 1 + 1e-9)).all()
    assert (spec.true_oracle_share_uncapped <= spec.true_oracle_share + 1e-9).all()
    assert frame[frame.method_kind != "entspec"].true_oracle_share.isna().all()
    AnalysisPipeline(tmp_path / "exp", tmp_path / "exp" / "plots").run_full_analysis()
    assert "true_oracle_share" in (tmp_path / "exp" / "plots" / "final_report.md").read_text()


def test_trace_refuses_a_cap_that_does_not_match_the_folder(tmp_path):
    from entspec.experiment import ExperimentConfig
    from entspec.replay.record import record_experiment
    from tiny import save_tiny_pair

    drafter, verifier = save_tiny_pair(tmp_path / "pair")
    config = ExperimentConfig(drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="gsm8k",
                              num_samples=1, max_new_tokens=8, max_sequence_length=200,
                              output_dir=str(tmp_path / "exp"), threads=1)
    with pytest.raises(ValueError, match="cap: must be an integer >= 1"):
        record_experiment(config, cap=0, progress=False)
    record_experiment(config, cap=6, progress=False)
    with pytest.raises(ValueError, match="cap: .* holds traces recorded with cap 6 \\(got 12\\)"):
        record_experiment(config, cap=12, progress=False)
