"""Sampling traces and the expected-value replay: β_t and the recorded statistics equal a direct computation, the
expected tokens per round of every registered rule agree with real sampled generations, and the sampling oracle
equals exhaustive search."""

import itertools
import math
import re

import numpy as np
import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.entropy import ENTROPY_TYPES, EntropyComputer
from entspec.engine.sampling import SamplingParams
from entspec.replay.cost import CostModel
from entspec.replay.engine import replay, true_oracle
from entspec.replay.expected import clairvoyant_oracle, expected_replay, predicted_sampled, sampling_oracle
from entspec.replay.sampled import (SampledMeta, SampledTrace, load_sampled_traces, record_sampled_trace,
                                    sampled_trace_path)
from entspec.replay.trace import Trace
from entspec.rules import RULES
from tiny import perturbed, tiny_llama

NEW_TOKENS, CAP, EOS = 12, 8, 22
SAMPLING = SamplingParams(temperature=1.0, top_p=0.9)
PROMPTS = [[5, 9, 3], [7, 1], [11, 12, 13, 14], [40], [33, 2, 60]]
SEEDS = 40  # trajectories per prompt, and real generations per prompt and rule: 200 of each
COST = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.01)
DRAWS = 16


def setting(name: str) -> dict:
    """One setting of every registered rule: its knob at the middle of its sweep, a cap below the traces'."""
    info = RULES[name]
    cfg = {"strategy": name, "max_draft_len": 6, "theta_abs": 1.0}
    values = info.sweep.get(info.threshold, ())
    if info.threshold and info.threshold != "max_draft_len" and values:
        cfg[info.threshold] = values[len(values) // 2]
    return cfg


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0, layers=1)
    verifier.generation_config.eos_token_id = EOS  # some trajectories end early: the EOS paths are replayed too
    return perturbed(verifier, noise=0.1), verifier


@pytest.fixture(scope="module")
def traces(pair):
    """SEEDS sampled trajectories per prompt (the verifier alone, batched: any lossless run gives one)."""
    drafter, verifier = pair
    prompts = [torch.tensor([p]) for p in PROMPTS]
    rows = [p for p in prompts for _ in range(SEEDS)]
    seeds = [s for _ in prompts for s in range(SEEDS)]
    outputs = EntropyBasedSpeculativeDecoder.autoregressive(verifier).generate_batch(
        rows, NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p, seed=seeds)
    return [record_sampled_trace(drafter, verifier, row, max_new_tokens=NEW_TOKENS, sampling=SAMPLING, seed=seed,
                                 cap=CAP, output=out.new_tokens, prompt_id=f"p{i // SEEDS}")
            for i, (row, seed, out) in enumerate(zip(rows, seeds, outputs))]


def ratio_and_se(tokens, rounds) -> tuple[float, float]:
    """Tokens per round as a ratio of sums over units, with its delta-method standard error."""
    tokens, rounds = np.asarray(tokens, float), np.asarray(rounds, float)
    ratio = tokens.sum() / rounds.sum()
    n = len(tokens)
    se = math.sqrt(((tokens - ratio * rounds) ** 2).sum() / (n * (n - 1))) / rounds.mean()
    return ratio, se


def test_beta_and_statistics_match_a_direct_computation(pair, traces):
    """β_t, a_t, q_t(y_t), top-1 and every entropy type, recomputed position by position from each model's own
    forward over prompt + y_<t and the engine's processing."""
    drafter, verifier = pair
    entropy = EntropyComputer()
    for trace in traces[:: SEEDS // 2][:4]:
        prompt = PROMPTS[int(trace.meta.prompt_id[1:])]
        for t in range(len(trace)):
            prefix = torch.tensor([prompt + trace.output[:t].tolist()])
            with torch.inference_mode():
                p_logits = SAMPLING.process(verifier(prefix).logits[0, -1:])
                q_logits = SAMPLING.process(drafter(prefix).logits[0, -1:])
            p, q = torch.softmax(p_logits, -1)[0].double(), torch.softmax(q_logits, -1)[0].double()
            y = int(trace.output[t])
            assert trace.beta[t] == pytest.approx(float(torch.minimum(p, q).sum()), abs=1e-5)
            assert trace.accept_prob[t] == pytest.approx(min(1.0, float(q[y] / p[y])), abs=1e-4)
            assert trace.token_prob[t] == pytest.approx(float(q[y]), abs=1e-5)
            assert trace.top1_prob[t] == pytest.approx(float(q.max()), abs=1e-5)
            for k, kind in enumerate(ENTROPY_TYPES):
                assert trace.entropy[t, k] == pytest.approx(float(entropy.compute(q_logits, kind)[0]), abs=1e-4)
            if trace.accept_prob[t] < 1:  # the rejected token comes from norm(max(0, q - p))
                assert float(q[int(trace.reject_token[t])]) > float(p[int(trace.reject_token[t])])
                assert trace.reject_prob[t] == pytest.approx(float(q[int(trace.reject_token[t])]), abs=1e-5)
    betas = np.concatenate([t.beta for t in traces])
    accepts = np.concatenate([t.accept_prob for t in traces])
    assert 0.5 < betas.mean() < 0.97, "the drafter must be wrong often enough for these tests to bite"
    assert accepts.mean() == pytest.approx(betas.mean(), abs=0.03)  # E_y[a_t(y)] = β_t
    assert any(len(t) < NEW_TOKENS for t in traces), "some trajectory must end at EOS for this test to bite"


def test_the_engine_sees_the_recorded_statistics(pair, traces):
    """The engine's first drafted token at this temperature has the trace's entropy at position 0."""
    drafter, verifier = pair
    trace = traces[0]
    res = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=1)).generate(
        torch.tensor([PROMPTS[0]]), NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p, seed=5)
    assert res.rounds[0].entropies[0] == pytest.approx(float(trace.entropy[0, 0]), rel=1e-4, abs=1e-5)


def test_continuations_are_the_drafters_own_distribution(pair, traces):
    """Row t continues prompt + y_<t + the rejected token with tokens drawn from the drafter's processed
    distribution: their recorded probabilities and entropies equal a fresh forward over that prefix."""
    drafter, _ = pair
    trace = traces[1]
    prompt = PROMPTS[0]
    rejectable = np.flatnonzero(trace.accept_prob < 1).tolist()
    assert rejectable and (trace.cont_prob[trace.accept_prob == 1] == 0).all()  # rows never read are not recorded
    for t in rejectable[:4]:
        prefix = prompt + trace.output[:t].tolist() + [int(trace.reject_token[t])] + trace.cont_token[t].tolist()
        with torch.inference_mode():
            logits = SAMPLING.process(drafter(torch.tensor([prefix])).logits[0])
        start = len(prompt) + t  # the logits that predict the first continuation token
        q = torch.softmax(logits[start:start + CAP - 1], -1)
        probs = q.gather(-1, torch.as_tensor(trace.cont_token[t])[:, None])[:, 0]
        assert np.allclose(trace.cont_prob[t], probs.numpy(), atol=1e-5)
        shannon = EntropyComputer().compute(logits[start:start + CAP - 1], "shannon").numpy()
        assert np.allclose(trace.cont_entropy[t, :, 0], shannon, atol=1e-4)


@pytest.mark.parametrize("name", sorted(RULES))
def test_expected_tokens_per_round_agree_with_real_generations(name, pair, traces):
    """Every registered rule: the expected-value replay's tokens per round (200 trajectories x 16 draws) and the
    mean over 200 real generations at the same temperature (5 prompts x 40 seeds, the batched engine) agree within
    the 99.9% Monte-Carlo confidence interval of their difference (both sides' standard errors)."""
    drafter, verifier = pair
    cfg = EntropyConfig(**setting(name))
    expected = [expected_replay(t, cfg, COST, draws=DRAWS) for t in traces]
    predicted, se_predicted = ratio_and_se([e.tokens for e in expected], [e.mean_rounds for e in expected])
    rows = [torch.tensor([p]) for p in PROMPTS for _ in range(SEEDS)]
    seeds = [1000 + s for _ in PROMPTS for s in range(SEEDS)]
    real = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate_batch(
        rows, NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p, seed=seeds)
    measured, se_measured = ratio_and_se([len(r.new_tokens) for r in real], [len(r.rounds) for r in real])
    z = abs(predicted - measured) / math.hypot(se_predicted, se_measured)
    print(f"{name}: expected {predicted:.3f} ± {se_predicted:.3f}, measured {measured:.3f} ± {se_measured:.3f}, "
          f"z = {z:.2f}")
    assert z < 3.29, (name, predicted, measured, se_predicted, se_measured)
    assert sum(r.drafted - r.accepted for g in real for r in g.rounds) > 0  # rejections were exercised


def test_expected_replay_against_the_single_sequence_engine(pair, traces):
    """An adaptive rule and a rule reading the drafted token's probability against `generate` (one sequence)."""
    drafter, verifier = pair
    for name in ("adaptive", "confidence"):
        cfg = EntropyConfig(**setting(name))
        expected = [expected_replay(t, cfg, COST, draws=DRAWS) for t in traces]
        predicted, se_predicted = ratio_and_se([e.tokens for e in expected], [e.mean_rounds for e in expected])
        decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
        real = [decoder.generate(torch.tensor([p]), NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p,
                                 seed=2000 + s) for p in PROMPTS for s in range(SEEDS)]
        measured, se_measured = ratio_and_se([len(r.new_tokens) for r in real], [len(r.rounds) for r in real])
        z = abs(predicted - measured) / math.hypot(se_predicted, se_measured)
        print(f"{name} (generate): expected {predicted:.3f} ± {se_predicted:.3f}, measured {measured:.3f} ± "
              f"{se_measured:.3f}, z = {z:.2f}")
        assert z < 3.29, (name, predicted, measured)


def fake_trace(accept: list[float], cap: int = 4) -> SampledTrace:
    n = len(accept)
    meta = SampledMeta("fake", "", 0, n, [], cap, 2.0, 10, 1.0, None, None, 0)
    k = cap - 1
    return SampledTrace(meta, np.arange(10, 10 + n), np.asarray(accept, float), np.asarray(accept, float),
                        np.full(n, 0.5, np.float32), np.full(n, 0.5, np.float32), np.zeros((n, 3), np.float32),
                        np.ones(n, np.int64), np.full(n, 0.1, np.float32), np.ones((n, k), np.int64),
                        np.full((n, k), 0.1, np.float32), np.zeros((n, k, 3), np.float32))


def policy_time(accept: list[float], policy: dict[int, int], cost: CostModel) -> float:
    """Expected time of a schedule (draft length per start position) by forward propagation of P(start at t)."""
    n = len(accept)
    reach = [0.0] * (n + 1)
    reach[0], total = 1.0, cost.prefill(0)
    for t in range(n):
        if reach[t] == 0:
            continue
        j = policy[t]
        total += reach[t] * cost.round_time(j, first=t == 0)
        alive = 1.0
        for i in range(j):  # A = i: the first i accepted, the (i + 1)-th rejected
            reach[t + i + 1] += reach[t] * alive * (1 - accept[t + i])
            alive *= accept[t + i]
        reach[t + j + 1] += reach[t] * alive
    return total


@pytest.mark.parametrize("cap", [2, 3, None])
def test_sampling_oracle_equals_exhaustive_search(cap):
    """On a small trace the DP's expected time equals the best of every schedule, found by enumeration."""
    accept = [0.9, 0.3, 0.95, 0.99, 0.6, 0.8, 0.1]
    n = len(accept)
    trace = fake_trace(accept, cap=4)
    options = [range(min(n - t - 1, cap if cap is not None else n) + 1) for t in range(n)]
    best = min(policy_time(accept, dict(enumerate(choice)), COST) for choice in itertools.product(*options))
    oracle = sampling_oracle(trace, COST, cap=cap)
    assert oracle.time_s == pytest.approx(best, rel=1e-12)
    assert policy_time(accept, dict(enumerate(oracle.drafted)), COST) == pytest.approx(best, rel=1e-12)


def test_realisations_draw_verdicts_at_the_recorded_rates(traces):
    trace = traces[3]
    accepted = np.array([~np.isin(np.arange(len(trace)), trace.realise(d).cont_pos) for d in range(2000)])
    assert np.allclose(accepted.mean(0), trace.accept_prob, atol=0.04)
    realised = trace.realise(0)
    assert isinstance(realised, Trace)
    assert (realised.match == np.isin(np.arange(len(trace)), realised.cont_pos, invert=True)).all()


def test_oracles_and_every_rule(traces):
    """The clairvoyant oracle (it knows the draws) bounds every rule; the sampling oracle beats every fixed k."""
    for trace in traces[::25]:
        for name in RULES:
            cfg = EntropyConfig(**setting(name))
            assert clairvoyant_oracle(trace, COST, cfg.max_draft_len, DRAWS) <= \
                expected_replay(trace, cfg, COST, DRAWS).mean_time_s + 1e-9
        accept = trace.accept_prob.tolist()
        for k in range(CAP + 1):
            schedule = {t: min(k, len(trace) - t - 1) for t in range(len(trace))}
            assert sampling_oracle(trace, COST, cap=k).time_s <= policy_time(accept, schedule, COST) + 1e-9
        assert sampling_oracle(trace, COST).time_s <= sampling_oracle(trace, COST, cap=3).time_s + 1e-12
    figures = predicted_sampled(traces[:20], EntropyConfig(**setting("svip")), COST, draws=4)
    assert 1 < figures["tokens_per_round"] and figures["of_clairvoyant_at_cap"] <= 1


def test_sampled_trace_files(tmp_path, traces):
    for i, trace in enumerate(traces[:2]):
        trace.save(sampled_trace_path(tmp_path, 0, trace.meta.prompt_id, trace.meta.seed))
    loaded = load_sampled_traces(tmp_path)
    assert [t.meta.seed for t in loaded] == [0, 1]
    assert np.array_equal(loaded[0].cont_token, traces[0].cont_token) and np.allclose(loaded[0].beta, traces[0].beta)
    with pytest.raises(ValueError, match="a sampling trace .*not a greedy one"):
        Trace.load(sampled_trace_path(tmp_path, 0, "p0", 0))
    other = traces[2]
    other.meta.top_p = 0.95
    try:
        other.save(sampled_trace_path(tmp_path, 1, "p0", 2))
    finally:
        other.meta.top_p = SAMPLING.top_p
    with pytest.raises(ValueError, match="recorded with top_p=0.95 but 0000-p0~s0.npz with 0.9"):
        load_sampled_traces(tmp_path)
    sampled_trace_path(tmp_path, 1, "p0", 2).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="0001-p0~s2.npz: not a readable entspec trace"):
        load_sampled_traces(tmp_path)
    with pytest.raises(ValueError, match="temperature: a sampling trace needs temperature > 0"):
        record_sampled_trace(None, None, torch.tensor([[1]]), max_new_tokens=2, sampling=SamplingParams())


def test_replay_refuses_a_cap_beyond_the_trace(traces):
    with pytest.raises(ValueError, match="max_draft_len: 9 exceeds the trace's cap 8"):
        expected_replay(traces[0], EntropyConfig(strategy="fixed", max_draft_len=9), COST)
    with pytest.raises(ValueError, match="draws: must be >= 1"):
        expected_replay(traces[0], EntropyConfig(strategy="fixed"), COST, draws=0)


def test_trace_and_tune_commands_at_a_temperature(tmp_path, capsys):
    """`entspec trace` at T > 0 records trajectories per prompt; `entspec tune` tunes on them (refusing another
    temperature, naming the flag) and its tuned.yaml says which traces; a rerun with another setting is refused
    naming the field; the replay columns of a sampled run are the expected-value replay's."""
    import yaml

    from entspec.cli import main
    from entspec.experiment import ExperimentConfig, ExperimentRunner
    from entspec.replay.compare import trace_columns
    from entspec.replay.record import record_experiment
    from entspec.metrics.aggregate import load_rows
    from tiny import save_tiny_pair

    drafter, verifier = save_tiny_pair(tmp_path / "pair")
    fields = dict(drafter_model_path=drafter, verifier_model_path=verifier, dataset_name="mix", num_samples=6,
                  max_new_tokens=10, max_sequence_length=200, output_dir=str(tmp_path / "exp"), experiment_name="t",
                  threads=1, temperature=0.8, top_p=0.9, dtype="float32", warmup_tokens=0, analyze=False,
                  baselines=False, methods=[{"strategy": "fixed", "max_draft_len": 3},
                                            {"strategy": "svip", "max_draft_len": 6}])
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(fields))
    assert main(["trace", str(config), "--cap", "8", "--trajectories", "2"]) == 0
    folder = tmp_path / "exp" / "traces"
    assert len(list(folder.glob("*~s*.npz"))) == 12 and (folder / "cost_model.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert main(["trace", str(config), "--cap", "8"]) == 0  # resumable (the folder's 2 trajectories): nothing to do
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == stamps
    refusals = {("trace", "--trajectories", "3"): "trajectories: .* holds 2 sampled trajectories per prompt \\(got 3\\)",
                ("trace", "--set", "top_p=0.95"): "top_p: .* holds traces recorded with top_p=0.9 \\(got 0.95\\)",
                ("tune", "--temperature", "1.0"): "--temperature: the traces in .* were recorded with --temperature "
                                                  "0.8 \\(got 1.0\\)",
                ("tune", "--draws", "0"): "--draws: must be >= 1"}
    capsys.readouterr()
    for (command, *flags), message in refusals.items():
        target = [str(config), "--cap", "8"] if command == "trace" else [str(tmp_path / "exp")]
        assert main([command, *target, *flags]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert main(["tune", str(tmp_path / "exp"), "--temperature", "0.8", "--top-p", "0.9", "--draws", "2"]) == 0
    text = (tmp_path / "exp" / "tune" / "tuned.yaml").read_text()
    assert text.startswith("# Settings tuned by") and "temperature 0.8, top-p 0.9" in text.splitlines()[0]
    tuned = yaml.safe_load(text)
    assert tuned["temperature"] == 0.8 and tuned["top_p"] == 0.9 and len(tuned["exclude_prompts"]) == 6
    ExperimentConfig(**tuned)  # a valid experiment, ready for `entspec run`
    report = (tmp_path / "exp" / "tune" / "report.md").read_text()
    assert "expectation" in report and "Sampling oracle" in report
    best = __import__("pandas").read_csv(tmp_path / "exp" / "tune" / "best.csv")
    assert set(best.strategy) == set(RULES)
    # settings tuned elsewhere (here: the chosen ones) judged on the same draws get the chosen figures
    assert main(["tune", str(tmp_path / "exp"), "--draws", "2", "--given", str(tmp_path / "exp" / "tune" / "tuned.yaml"),
                 "--out", str(tmp_path / "given")]) == 0
    given = __import__("pandas").read_csv(tmp_path / "given" / "given.csv")
    chosen = best[(best.category == "all") & (best.strategy == "fixed")].iloc[0]
    assert given[given.params == chosen.params].held_out_speedup.iloc[0] == pytest.approx(chosen.held_out_speedup)

    # the bench's replay check at T > 0: real sampled rows next to the expected-value replay
    cfg = ExperimentConfig(**fields)
    ExperimentRunner(cfg, progress=False).run()
    record_experiment(cfg, cap=8, progress=False, trajectories=2)  # the traces are there: nothing to do
    rows = [r.as_mapping() for r in load_rows(tmp_path / "exp" / "results" / "results.jsonl")]
    columns = trace_columns(tmp_path / "exp", rows)
    spec = [i for i, r in enumerate(rows) if r["method_kind"] == "entspec"]
    assert spec and all(columns["predicted_tokens_per_s"][i] > 0 for i in spec)
    assert all(np.isnan(columns["replay_exact"][i]) for i in spec)
