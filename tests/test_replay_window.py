"""Replay and tuning with a drafter window (``drafter_context: N``): traces of the windowed drafter, replay that
follows the engine's window (its rebuilds and their prefill), and `entspec tune --drafter-contexts` choosing N."""

import json

import numpy as np
import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.replay.cost import CostModel
from entspec.replay.engine import replay
from entspec.replay.trace import drafter_windows, load_traces, record_trace
from entspec.replay.tune import report_markdown, tune, windowed_cost
from tiny import context_free_gpt2, perturbed, tiny_llama

NEW_TOKENS, CAP = 16, 8
COST = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.01,
                 prefill_s_per_token={"drafter": 0.01, "verifier": 0.02})


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0)
    return perturbed(verifier, noise=0.08), verifier


@pytest.fixture(scope="module")
def prompts(pair):
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(6, pair[1].config.vocab_size, (1, 24 + i), generator=gen) for i in range(4)]


def test_windows_are_rebuilt_on_the_last_n_tokens_once_full():
    # prompt 10, window 4: the window holds positions 6..; full (2N + 1 = 9 tokens) at output position 5
    assert drafter_windows(10, 20, 4) == [(6, 0, 5), (11, 5, 10), (16, 10, 15), (21, 15, 20)]
    assert drafter_windows(2, 12, 4) == [(0, 0, 7), (5, 7, 12)]  # a prompt shorter than the window
    assert drafter_windows(10, 20, None) == [(0, 0, 20)]


def test_a_windowed_trace_holds_what_the_windowed_drafter_reads(pair, prompts):
    drafter, verifier = pair
    prompt = prompts[0]
    trace = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=CAP, drafter_context=5)
    full = torch.cat([prompt, torch.tensor([trace.output.tolist()])], dim=1)
    assert trace.meta.drafter_context == 5
    for start, lo, hi in drafter_windows(prompt.shape[1], len(trace), 5):
        for t in (lo, hi - 1):  # the drafter on the window alone, from position 0
            with torch.no_grad():
                logits = drafter(full[:, start:prompt.shape[1] + t]).logits[0, -1]
            q = torch.softmax(logits.float(), -1)
            assert int(q.argmax()) == int(trace.draft_token[t])
            assert float(q.max()) == pytest.approx(float(trace.token_prob[t]), rel=1e-4)
    whole = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=CAP)
    assert whole.output.tolist() == trace.output.tolist()
    assert not np.allclose(whole.token_prob, trace.token_prob)  # the window changes what the drafter sees


@pytest.mark.parametrize("prefill", ["upfront", "deferred"])
@pytest.mark.parametrize("setting", [{"strategy": "fixed", "max_draft_len": 4},
                                     {"strategy": "svip", "svip_threshold": 0.5, "max_draft_len": CAP},
                                     {"strategy": "adaptive", "theta_abs": 1.0, "max_draft_len": 6}])
def test_replay_on_a_windowed_trace_is_the_engine_until_the_first_rebuild(setting, prefill, pair, prompts):
    """A window of 20 under 24+ prompt tokens: the window is rebuilt only after 21 new tokens, so the 16 here are
    replayed round for round (the deferred prefill's window starts one token later: exact where that token does
    not change a draft, which the assertion checks on these prompts)."""
    drafter, verifier = pair
    cfg = EntropyConfig(**setting, drafter_context=20, drafter_prefill=prefill)
    drafted = 0
    for prompt in prompts:
        trace = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=CAP, drafter_context=20)
        engine = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(prompt, NEW_TOKENS)
        replayed = replay(trace, cfg, COST)
        if prefill == "upfront":
            assert replayed.rounds() == [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
            assert replayed.stop_reasons == [r.stop_reason for r in engine.rounds]
        else:  # the first round: deferred; the rest drafts from a window one token later
            assert replayed.rounds()[0] == (0, 0, 1) == (engine.rounds[0].drafted, 0, engine.rounds[0].emitted)
        drafted += sum(replayed.drafted)
    assert drafted > 0


def test_replay_charges_the_window_rebuilds_where_the_engine_runs_them(pair, prompts):
    """A drafter equal to a verifier that ignores its context accepts every draft, so replay and engine run the
    same rounds whatever the window; the drafter prefills replay charges (prefill, then rebuilds) fall in the rounds where the engine's
    drafter prefilled."""
    verifier = context_free_gpt2(torch.arange(12.0))  # the same argmax whatever the context
    prompt = prompts[1] % 12
    cfg = EntropyConfig(strategy="fixed", max_draft_len=2, drafter_context=4)
    decoder = EntropyBasedSpeculativeDecoder(verifier, verifier, cfg)
    lm, calls, rounds = decoder.drafter.lm, [], []
    prefill = lm.prefill

    def counting(sequence, *args, **kwargs):
        calls.append((len(rounds), sequence.shape[1]))
        return prefill(sequence, *args, **kwargs)

    lm.prefill = counting
    original = decoder.drafter.update

    def heard(draft, accepted):
        rounds.append(accepted)
        return original(draft, accepted)

    decoder.drafter.update = heard
    engine = decoder.generate(prompt, max_new_tokens=24)
    trace = record_trace(verifier, verifier, prompt, max_new_tokens=24, cap=CAP, drafter_context=4)
    replayed = replay(trace, cfg, COST)
    assert replayed.rounds() == [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
    assert calls[0] == (0, 4) and len(calls) > 2  # the prefill of the window, then rebuilds of 4 tokens
    plain_round = [COST.round_time(d, first=i == 0, steps=s) for i, (d, s) in enumerate(zip(replayed.drafted,
                                                                                                replayed.steps))]
    charged = [i for i, (r, p) in enumerate(zip(replayed.round_s, plain_round)) if r > p + 1e-9]
    assert charged == [i for i, _ in calls[1:]]
    assert replayed.prefill_s == pytest.approx(COST.prefill(prompt.shape[1], drafter_window=4))


def test_replay_refuses_a_window_the_trace_was_not_recorded_with(pair, prompts):
    drafter, verifier = pair
    trace = record_trace(drafter, verifier, prompts[0], max_new_tokens=4, cap=CAP)
    with pytest.raises(ValueError, match="^drafter_context: 8 but the trace of prompt was recorded with drafter "
                                         "window none"):
        replay(trace, EntropyConfig(strategy="fixed", drafter_context=8), COST)
    windowed = record_trace(drafter, verifier, prompts[0], max_new_tokens=4, cap=CAP, drafter_context=8)
    with pytest.raises(ValueError, match="^drafter_context: None but .* drafter window 8"):
        replay(windowed, EntropyConfig(strategy="fixed"), COST)


def test_tune_sweeps_the_windows_and_chooses_one_per_category(pair, prompts):
    drafter, verifier = pair
    base, windowed = [], []
    for i, prompt in enumerate(prompts):
        common = dict(max_new_tokens=NEW_TOKENS, cap=CAP, prompt_id=f"p{i}", category="ab"[i % 2])
        base.append(record_trace(drafter, verifier, prompt, **common))
        windowed.append(record_trace(drafter, verifier, prompt, drafter_context=6, **common))
    cheap = CostModel(**{**COST.to_dict(), "draft_step_s": 0.01})  # the windowed drafter's steps cost far less
    result = tune(base, COST, rules=["fixed", "svip"], progress=False, windows={6: (windowed, cheap)})
    params = [json.loads(p) for p in result.sweep.params.unique()]
    assert {p.get("drafter_context", 0) for p in params} == {0, 6} and result.windows == [6]
    # a windowed configuration is timed on the windowed traces with the window's drafter step
    chosen = next(p for p in result.sweep.params.unique() if json.loads(p).get("drafter_context") == 6)
    cfg, rows = EntropyConfig(**json.loads(chosen)), result.sweep[result.sweep.params == chosen].sort_values("prompt")
    assert rows.time_s.tolist() == pytest.approx([replay(t, cfg, windowed_cost(COST, cheap)).time_s
                                                  for t in windowed])
    report = report_markdown(result, COST, "entspec tune exp --drafter-contexts 6")
    assert "Drafter window chosen per category" in report
    # each category's choice is its best tuning speedup over both windows, and the cheap window wins somewhere
    per_cat = result.best[result.best.category != "all"]
    for r in per_cat.itertuples():
        rows = result.sweep[(result.sweep.category == r.category) & (result.sweep.split == "tune")
                            & (result.sweep.strategy == r.strategy)]
        speedups = rows.groupby("params").plain_time_s.sum() / rows.groupby("params").time_s.sum()
        assert r.tune_speedup == pytest.approx(speedups.max())
    assert any(json.loads(p).get("drafter_context") == 6 for p in per_cat.params)


def test_a_window_s_costs_are_the_base_s_with_the_drafter_measured_against_it(pair):
    from entspec.replay.cost import calibrate_window

    drafter, verifier = pair
    prompt = torch.randint(6, verifier.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(3))
    window = calibrate_window(drafter, verifier, prompt, COST, 8, rounds=2, repeats=2)
    assert (window.verify_tokens, window.verify_s, window.overhead_round_s) == ([1, 9], [1.0, 1.2], 0.01)
    assert window.prefill_s_per_token["verifier"] == 0.02
    # the ratios are this process's measurements, expressed on the base's scale (its seconds, not the tiny pair's)
    assert 0.04 < window.draft_step_s < 4.0
    assert 0.0 < window.model_prefill("drafter", 8) < 5 * COST.model_prefill("drafter", 64)


def test_trace_and_tune_commands_with_a_window(tmp_path, capsys):
    """`entspec trace --drafter-context N` records into traces-wN; `entspec tune --drafter-contexts N` reads it and
    refuses a window it has no traces of, naming the folder."""
    from entspec.cli import main
    from tiny import tiny_experiment_yaml

    config = tiny_experiment_yaml(tmp_path, max_new_tokens=12)
    assert main(["trace", str(config), "--cap", "8"]) == 0
    assert main(["trace", str(config), "--cap", "8", "--drafter-context", "6"]) == 0
    folder = tmp_path / "exp" / "traces-w6"
    assert len(list(folder.glob("*.npz"))) == 6 and (folder / "cost_model.json").is_file()
    assert json.loads((folder / "trace.json").read_text())["drafter_context"] == 6
    # the window's costs: the whole sequence's, with the drafter's step and prefill measured against them
    whole, window = (CostModel.load(f / "cost_model.json") for f in (tmp_path / "exp" / "traces", folder))
    assert (window.verify_tokens, window.verify_s, window.overhead_round_s) == (
        whole.verify_tokens, whole.verify_s, whole.overhead_round_s)
    assert window.prefill_s_per_token["verifier"] == whole.prefill_s_per_token["verifier"]
    assert window.draft_step_s > 0 and window.draft_step_s != whole.draft_step_s
    base, windowed = load_traces(tmp_path / "exp" / "traces"), load_traces(folder)
    assert [t.output.tolist() for t in windowed] == [t.output.tolist() for t in base]  # the window never changes it
    assert main(["tune", str(tmp_path / "exp"), "--rules", "fixed", "--drafter-contexts", "6"]) == 0
    report = (tmp_path / "exp" / "tune" / "report.md").read_text()
    assert "Drafter window chosen per category" in report
    capsys.readouterr()
    assert main(["tune", str(tmp_path / "exp"), "--rules", "fixed", "--drafter-contexts", "9"]) == 2
    assert "traces-w9: no such traces folder" in capsys.readouterr().err
