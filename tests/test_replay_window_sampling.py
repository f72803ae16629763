"""Sampling traces with a drafter window (issue 24 at T > 0): q_t and the continuations are the windowed drafter's,
the expected-value replay of a windowed trace agrees with real windowed generations, and `entspec trace
--drafter-context N` / `entspec tune --drafter-contexts N` work at a temperature on the same trajectories."""

import json
import math

import numpy as np
import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.entropy import ENTROPY_TYPES, EntropyComputer
from entspec.engine.sampling import SamplingParams
from entspec.replay.cost import CostModel
from entspec.replay.expected import expected_replay
from entspec.replay.sampled import record_sampled_trace
from entspec.replay.trace import drafter_windows
from entspec.replay.tune import tune_sampled
from test_replay_sampling import ratio_and_se
from tiny import perturbed, tiny_llama

NEW_TOKENS, CAP = 12, 8
SAMPLING = SamplingParams(temperature=1.0, top_p=0.9)
COST = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.01,
                 prefill_s_per_token={"drafter": 0.01, "verifier": 0.02})


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0, layers=1)
    return perturbed(verifier, noise=0.1), verifier


@pytest.fixture(scope="module")
def prompts(pair):
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(6, pair[1].config.vocab_size, (1, 24), generator=gen) for _ in range(3)]


def test_a_windowed_sampling_trace_holds_what_the_windowed_drafter_reads(pair, prompts):
    """Window 5 under a 24-token prompt (rebuilt after 6 new tokens): β_t, q_t(y_t), the entropies and the rejected
    token's continuation equal the drafter's forward over its window alone, from position 0; the trajectory and p_t
    are the whole sequence's."""
    drafter, verifier = pair
    prompt = prompts[0]
    whole = record_sampled_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, sampling=SAMPLING, seed=3,
                                 cap=CAP)
    trace = record_sampled_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, sampling=SAMPLING, seed=3,
                                 cap=CAP, drafter_context=5, output=whole.output.tolist())
    assert trace.meta.drafter_context == 5 and trace.realise(0).meta.drafter_context == 5
    full = torch.cat([prompt, torch.tensor([trace.output.tolist()])], dim=1)
    windows = drafter_windows(prompt.shape[1], len(trace), 5)
    assert len(windows) == 2  # rebuilt once, after 6 new tokens
    entropy = EntropyComputer()
    for start, lo, hi in windows:
        for t in range(lo, hi):
            with torch.inference_mode():
                q_logits = SAMPLING.process(drafter(full[:, start:prompt.shape[1] + t]).logits[0, -1:])
                p_logits = SAMPLING.process(verifier(full[:, :prompt.shape[1] + t]).logits[0, -1:])
            q, p = torch.softmax(q_logits, -1)[0].double(), torch.softmax(p_logits, -1)[0].double()
            y = int(trace.output[t])
            assert trace.beta[t] == pytest.approx(float(torch.minimum(p, q).sum()), abs=1e-5)
            assert trace.token_prob[t] == pytest.approx(float(q[y]), abs=1e-5)
            for k, kind in enumerate(ENTROPY_TYPES):
                assert trace.entropy[t, k] == pytest.approx(float(entropy.compute(q_logits, kind)[0]), abs=1e-4)
            if trace.accept_prob[t] < 1:  # the continuation: the windowed drafter after the rejected token
                ids = [int(trace.reject_token[t])] + trace.cont_token[t].tolist()
                prefix = torch.cat([full[:, start:prompt.shape[1] + t], torch.tensor([ids])], dim=1)
                with torch.inference_mode():
                    logits = SAMPLING.process(drafter(prefix).logits[0])
                first = prompt.shape[1] + t - start  # the logits predicting the first continuation token
                cont_q = torch.softmax(logits[first:first + CAP - 1], -1)
                probs = cont_q.gather(-1, torch.as_tensor(trace.cont_token[t])[:, None])[:, 0]
                assert np.allclose(trace.cont_prob[t], probs.numpy(), atol=1e-5)
    assert not np.allclose(trace.token_prob, whole.token_prob)  # the window changes what the drafter sees


@pytest.mark.parametrize("setting", [{"strategy": "svip", "svip_threshold": 0.5, "max_draft_len": 6},
                                     {"strategy": "adaptive", "theta_abs": 1.0, "max_draft_len": 6}])
def test_expected_replay_of_a_windowed_trace_agrees_with_windowed_generations(setting, pair, prompts):
    """Window 12 under 24-token prompts: never rebuilt within 12 new tokens, so the windowed engine and the trace
    read the same window. Expected tokens per round (120 trajectories x 16 draws) and the mean over 120 real
    windowed generations (the batched engine) agree within the 99.9% Monte-Carlo interval of their difference."""
    drafter, verifier = pair
    seeds = 40
    rows = [p for p in prompts for _ in range(seeds)]
    traces = [record_sampled_trace(drafter, verifier, row, max_new_tokens=NEW_TOKENS, sampling=SAMPLING, seed=s,
                                   cap=CAP, prompt_id=f"p{i // seeds}", drafter_context=12)
              for i, (row, s) in enumerate(zip(rows, [s for _ in prompts for s in range(seeds)]))]
    cfg = EntropyConfig(**setting, drafter_context=12)
    expected = [expected_replay(t, cfg, COST, draws=16) for t in traces]
    predicted, se_predicted = ratio_and_se([e.tokens for e in expected], [e.mean_rounds for e in expected])
    real = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate_batch(
        rows, NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p, seed=[1000 + s for s in range(len(rows))])
    measured, se_measured = ratio_and_se([len(r.new_tokens) for r in real], [len(r.rounds) for r in real])
    z = abs(predicted - measured) / math.hypot(se_predicted, se_measured)
    print(f"{setting['strategy']} w12: expected {predicted:.3f} ± {se_predicted:.3f}, measured {measured:.3f} ± "
          f"{se_measured:.3f}, z = {z:.2f}")
    assert z < 3.29, (predicted, measured, se_predicted, se_measured)
    assert sum(r.drafted - r.accepted for g in real for r in g.rounds) > 0  # rejections were exercised
    with pytest.raises(ValueError, match="^drafter_context: None but .* drafter window 12"):
        expected_replay(traces[0], EntropyConfig(strategy="fixed"), COST)


def test_tune_sampled_sweeps_the_windows_on_the_same_trajectories(pair, prompts):
    drafter, verifier = pair
    base, windowed = [], []
    for i, prompt in enumerate(prompts * 2):
        common = dict(max_new_tokens=NEW_TOKENS, sampling=SAMPLING, seed=i // 3, cap=CAP, prompt_id=f"p{i % 3}",
                      category="ab"[i % 3 % 2])
        base.append(record_sampled_trace(drafter, verifier, prompt, **common))
        windowed.append(record_sampled_trace(drafter, verifier, prompt, drafter_context=6,
                                             output=base[-1].output.tolist(), **common))
    cheap = CostModel(**{**COST.to_dict(), "draft_step_s": 0.01})  # the windowed drafter's steps cost far less
    result = tune_sampled(base, COST, draws=2, rules=["fixed", "svip"], progress=False, held_out=0.34,
                          windows={6: (windowed, cheap)})
    params = [json.loads(p) for p in result.sweep.params.unique()]
    assert {p.get("drafter_context", 0) for p in params} == {0, 6} and result.windows == [6]
    per_cat = result.best[result.best.category != "all"]
    assert any(json.loads(p).get("drafter_context") == 6 for p in per_cat.params)
    # a windowed configuration's oracle share is of the windowed traces' sampling oracle
    row = result.best[result.best.params.map(lambda p: json.loads(p).get("drafter_context") == 6)].iloc[0]
    assert 0 < row.of_oracle < 2


def test_trace_and_tune_commands_with_a_window_at_a_temperature(tmp_path, capsys):
    """`entspec trace --drafter-context N` at T > 0 records the base traces' trajectories again with the window;
    `entspec tune --drafter-contexts N` sweeps it; a bench row with the window gets the expected-value replay of
    the windowed traces."""
    from entspec.cli import main
    from entspec.experiment import ExperimentConfig, ExperimentRunner
    from entspec.metrics.aggregate import load_rows
    from entspec.replay.compare import trace_columns
    from entspec.replay.sampled import load_sampled_traces
    from tiny import tiny_experiment_yaml

    config = tiny_experiment_yaml(tmp_path, max_new_tokens=10, temperature=0.8, top_p=0.9, dtype="float32",
                                  warmup_tokens=0, analyze=False, baselines=False,
                                  methods=[{"strategy": "svip", "max_draft_len": 6, "drafter_context": 6}])
    assert main(["trace", str(config), "--cap", "8", "--trajectories", "2"]) == 0
    assert main(["trace", str(config), "--cap", "8", "--drafter-context", "6"]) == 0
    folder = tmp_path / "exp" / "traces-w6"
    assert len(list(folder.glob("*~s*.npz"))) == 12 and (folder / "cost_model.json").is_file()
    info = json.loads((folder / "trace.json").read_text())
    assert info["drafter_context"] == 6 and info["trajectories"] == 2
    base, window = load_sampled_traces(tmp_path / "exp" / "traces"), load_sampled_traces(folder)
    assert [(t.meta.seed, t.output.tolist()) for t in window] == [(t.meta.seed, t.output.tolist()) for t in base]
    assert {t.meta.drafter_context for t in window} == {6}
    assert main(["tune", str(tmp_path / "exp"), "--rules", "fixed", "svip", "--draws", "2",
                 "--drafter-contexts", "6"]) == 0
    assert "Drafter window chosen per category" in (tmp_path / "exp" / "tune" / "report.md").read_text()
    capsys.readouterr()
    assert main(["tune", str(tmp_path / "exp"), "--draws", "2", "--drafter-contexts", "9"]) == 2
    assert "traces-w9: no such traces folder" in capsys.readouterr().err

    cfg = ExperimentConfig.from_yaml(config)
    ExperimentRunner(cfg, progress=False).run()
    rows = [r.as_mapping() for r in load_rows(tmp_path / "exp" / "results" / "results.jsonl")]
    columns = trace_columns(tmp_path / "exp", rows)
    spec = [i for i, r in enumerate(rows) if r["method_kind"] == "entspec"]
    assert spec and all(columns["predicted_tokens_per_s"][i] > 0 for i in spec)
