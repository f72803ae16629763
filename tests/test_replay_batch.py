"""Batch replay (`entspec.replay.batch`) reproduces `generate_batch` row by row and round by round, prices a round
as the batch cost model says, and lets `entspec tune --batch-size B` choose settings per batch size."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from entspec import BatchCostModel, EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.replay.batch import batch_oracle, plain_batch, replay_batch
from entspec.replay.cost import CostModel
from entspec.replay.engine import replay
from entspec.replay.trace import Trace, TraceMeta, record_trace, save_npz, trace_path
from tiny import perturbed, tiny_llama

NEW_TOKENS, CAP, PROMPTS = 20, 6, 6
COST = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.01)
SETTINGS = {  # one setting per rule; the adaptive one with the gate on (per-row rule and gate state)
    "fixed": {"strategy": "fixed", "max_draft_len": 4},
    "svip": {"strategy": "svip", "svip_threshold": 0.5, "max_draft_len": CAP},
    "adaptive": {"strategy": "adaptive", "theta_abs": 1.0, "max_draft_len": 5, "gate": True},
    "absolute": {"strategy": "absolute", "theta_abs": 2.0, "max_draft_len": CAP},
}


def batch_costs(draft: float = 0.1, flat_to: int = 8, slope: float = 0.1, layout: str = "padded") -> BatchCostModel:
    """Synthetic costs (not refined by the tiny models' real timings, so the engine's batch stop reads the same
    table as replay): a drafter step of ``draft``; the verifier 1.0 up to ``flat_to`` positions in all, then
    ``slope`` per position, as measured on a CPU; a drafter prefill of 8 tokens 14 s, so that a deferred prefill's
    catch-up (a whole prompt) is sometimes worth paying and sometimes not."""
    rows, widths = [1, 2, 4, 8], [1, 2, 4, 8, 12]
    return BatchCostModel(draft_rows=rows, draft_s=[draft] * 4, verify_rows=rows, verify_widths=widths,
                          verify_s=[[1.0 + slope * max(0, b * w - flat_to) for w in widths] for b in rows],
                          cached_tokens=8, draft_prefill_s=[14.0] * 4, refine=False, layout=layout)


@pytest.fixture(scope="module")
def pair_and_traces():
    """Prompts of 2..7 tokens on the tiny fp32 pair, EOS 22 (some outputs end early), and their greedy traces."""
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0)
    verifier.generation_config.eos_token_id = 22
    drafter = perturbed(verifier, noise=0.05)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(6, verifier.config.vocab_size, (1, 2 + i), generator=gen) for i in range(PROMPTS)]
    traces = [record_trace(drafter, verifier, p, max_new_tokens=NEW_TOKENS, cap=CAP, prompt_id=f"p{i}")
              for i, p in enumerate(prompts)]
    assert any(len(t) < NEW_TOKENS for t in traces), "some output must end at EOS for the test to bite"
    assert sum(len(t.cont_pos) for t in traces) > 0, "the drafter must be wrong somewhere for the test to bite"
    return drafter, verifier, prompts, traces


@pytest.mark.parametrize("layout,prefill,batch_stop", [("padded", p, s) for p in ("upfront", "deferred")
                                                        for s in ("rows", "cost")] + [("packed", "deferred", "cost")])
@pytest.mark.parametrize("rule", sorted(SETTINGS))
def test_batch_replay_reproduces_the_batched_engine(rule, batch_stop, prefill, layout, pair_and_traces):
    drafter, verifier, prompts, traces = pair_and_traces
    cfg = EntropyConfig(**SETTINGS[rule], batch_stop=batch_stop, drafter_prefill=prefill, batch_layout=layout)
    costs = batch_costs(layout=layout)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
    stops = set()
    for size in (1, 2, 4):
        replayed = replay_batch(traces, cfg, costs, size)
        engine = [result for start in range(0, len(prompts), size)
                  for result in decoder.generate_batch(prompts[start:start + size], max_new_tokens=NEW_TOKENS,
                                                       batch_costs=costs)]
        assert len(replayed.batches) == -(-len(prompts) // size) and len(replayed.rows) == len(engine)
        for j, (row, result) in enumerate(zip(replayed.rows, engine)):
            where = (rule, batch_stop, size, j)
            assert row.rounds() == [(r.drafted, r.accepted, r.emitted) for r in result.rounds], where
            assert row.stop_reasons == [r.stop_reason for r in result.rounds], where
            assert row.thresholds == [r.threshold if r.threshold is None else pytest.approx(r.threshold, rel=1e-5)
                                      for r in result.rounds], where
            widths = row.steps if layout == "padded" else row.drafted  # packed: a row verifies its own tokens
            assert [w + 1 for w in widths] == [r.verify_width for r in result.rounds], where
            stops |= set(row.stop_reasons)
        if size > 1:  # a row left its batch before the others
            assert any(rounds[-1].rows < rounds[0].rows for rounds in replayed.batches)
    # the rows' own rules and (with batch_stop cost) the batch's stop both cut drafts: the test compared both
    assert ("criterion" in stops) == (rule != "fixed") and ("batch_cost" in stops) == (batch_stop == "cost")


@pytest.mark.parametrize("rule", sorted(SETTINGS))
def test_one_row_batches_and_row_stops_are_the_single_sequence_replay(rule, pair_and_traces):
    """With each row stopping on its own rule a row's rounds do not depend on its batch-mates: at any batch size
    they are the single-sequence replay's."""
    _, _, _, traces = pair_and_traces
    cfg = EntropyConfig(**SETTINGS[rule])
    for size in (1, 4):
        for row, trace in zip(replay_batch(traces, cfg, batch_costs(), size).rows, traces):
            alone = replay(trace, cfg, COST)
            assert row.rounds() == alone.rounds() and row.stop_reasons == alone.stop_reasons
            assert row.thresholds == alone.thresholds


def fake_trace(match: list[bool], prompt_id: str, prompt_len: int = 1) -> Trace:
    """A trace whose drafter agrees with the verifier where ``match`` says (token 1 where not, and after)."""
    n, match = len(match), np.asarray(match, bool)
    output = np.arange(10, 10 + n)
    wrong = np.flatnonzero(~match)
    return Trace(TraceMeta(prompt_id, "", prompt_len, n, [], 4, 2.0, 10), output, np.where(match, output, 1),
                 np.ones(n, np.float32), np.ones(n, np.float32), np.zeros((n, 3), np.float32), wrong,
                 np.ones((len(wrong), 3), np.int64), np.ones((len(wrong), 3), np.float32),
                 np.zeros((len(wrong), 3, 3), np.float32))


def test_a_batch_round_costs_its_drafter_steps_and_one_padded_verify():
    """By hand, fixed k = 2: A (4 tokens, all agreed) and B (6 tokens, wrong at 1) in one batch.

    round 1: both draft 2 (A accepts 2, B 1)      2 x draft(2) + verify(2, 3) = 0.30 + 1.9 = 2.2
    round 2: A has 1 token left (no draft), B drafts 2 and accepts them: a row that drafts nothing is padded
                                                  2 x draft(2) + verify(2, 3) = 2.2
    round 3: A is done; B's last token alone      verify(1, 1) = 1.0
    """
    costs = BatchCostModel(draft_rows=[1, 2], draft_s=[0.1, 0.15], verify_rows=[1, 2], verify_widths=[1, 2, 3],
                           verify_s=[[1.0, 1.1, 1.2], [1.5, 1.7, 1.9]], refine=False)
    a, b = fake_trace([True] * 4, "a"), fake_trace([True, False, True, True, True, True], "b")
    cfg = EntropyConfig(strategy="fixed", max_draft_len=2)
    run = replay_batch([a, b], cfg, costs, 2)
    assert [(r.rows, r.steps, r.width) for r in run.batches[0]] == [(2, 2, 3), (2, 2, 3), (1, 0, 1)]
    assert [r.seconds for r in run.batches[0]] == pytest.approx([2.2, 2.2, 1.0])
    assert run.rows[0].rounds() == [(2, 2, 3), (0, 0, 1)] and run.rows[1].rounds() == [(2, 1, 2), (2, 2, 3), (0, 0, 1)]
    assert [row.time_s for row in run.rows] == pytest.approx([2.2, 3.2])  # equal shares of the rounds a row is in
    assert run.time_s == pytest.approx(5.4) and run.tokens_per_s == pytest.approx(10 / 5.4)
    # Plain decoding, batched: four rounds of both rows, then two of B alone.
    assert plain_batch([a, b], costs, 2).time_s == pytest.approx(4 * 1.5 + 2 * 1.0)
    # Batches of one: A alone drafts 2 (2 x 0.1 + verify(1, 3)), then its last token.
    alone = replay_batch([a, b], cfg, costs, 1)
    assert [row.time_s for row in alone.rows] == pytest.approx([1.4 + 1.0, 1.4 + 1.4 + 1.0])
    # Drafting that never pays: the batch's stop drafts nothing, and the batch is plain decoding.
    costly = BatchCostModel(**{**costs.to_dict(), "draft_s": [5.0, 5.0]})
    stopped = replay_batch([a, b], cfg.replace(batch_stop="cost"), costly, 2)
    assert {s for row in stopped.rows for s in row.stop_reasons} == {"batch_cost", "max_new_tokens"}
    assert stopped.time_s == pytest.approx(plain_batch([a, b], costly, 2).time_s)
    with pytest.raises(ValueError, match="batch_size: must be an integer >= 1"):
        replay_batch([a], cfg, costs, 0)


def test_the_batch_oracle_drafts_what_is_accepted_at_the_best_depth_of_each_round():
    """By hand, two rows in one batch: A (4 tokens, all agreed: runs 4 3 2 1) and B (6 tokens, wrong at 1: runs
    1 0 4 3 2 1); a verifier call over 3 positions of 2 rows costs 2.6 s.

    round 1: A may draft 3, B 1. Depth 1: 4 tokens / (0.15 + 1.7) = 2.16 per s; depth 2: 5 / (0.3 + 2.6) = 1.72
    round 2: A (at 2) may draft 1, B (at 2) 3: depth 1 again, 4 tokens in 1.85 s; A is done
    round 3: B alone at 4 may draft 1 (one token left after it): 2 tokens / (0.1 + 1.1) beats 1 / 1.0
    """
    costs = BatchCostModel(draft_rows=[1, 2], draft_s=[0.1, 0.15], verify_rows=[1, 2], verify_widths=[1, 2, 3],
                           verify_s=[[1.0, 1.1, 1.2], [1.5, 1.7, 2.6]], refine=False)
    a, b = fake_trace([True] * 4, "a"), fake_trace([True, False, True, True, True, True], "b")
    run = batch_oracle([a, b], costs, 2)
    assert [(r.rows, r.steps) for r in run.batches[0]] == [(2, 1), (2, 1), (1, 1)]
    assert run.time_s == pytest.approx(1.85 + 1.85 + 1.2)
    assert run.rows[0].rounds() == [(1, 1, 2), (1, 1, 2)] and run.rows[1].rounds() == [(1, 1, 2)] * 3
    # The cap bounds each row's draft; with a drafter that never pays, the schedule is batched plain decoding.
    capped = batch_oracle([a, b], BatchCostModel(**{**costs.to_dict(), "verify_s": [[1.0, 1.1, 1.2],
                                                                                  [1.5, 1.7, 1.9]]}), 2, cap=2)
    assert [(r.rows, r.steps) for r in capped.batches[0]] == [(2, 2), (2, 2), (1, 0)]
    costly = BatchCostModel(**{**costs.to_dict(), "draft_s": [5.0, 5.0]})
    assert batch_oracle([a, b], costly, 2).time_s == pytest.approx(plain_batch([a, b], costly, 2).time_s)
    with pytest.raises(ValueError, match="batch_size: must be an integer >= 1"):
        batch_oracle([a], costs, 0)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_no_rule_beats_the_batch_oracle_on_real_traces(batch_size, pair_and_traces):
    """The clairvoyant schedule is a reference, not a proven bound; on the tiny pair's traces no registered rule's
    batch replay (either batch stop) and no fixed k is faster than it at the rule's cap."""
    _, _, _, traces = pair_and_traces
    costs = batch_costs()
    configs = [EntropyConfig(**SETTINGS[rule], batch_stop=stop)
               for rule in sorted(SETTINGS) for stop in ("rows", "cost")]
    configs += [EntropyConfig(strategy="fixed", max_draft_len=k) for k in range(1, CAP + 1)]
    for cfg in configs:
        oracle = batch_oracle(traces, costs, batch_size, cap=cfg.max_draft_len)
        assert oracle.new_tokens == replay_batch(traces, cfg, costs, batch_size).new_tokens
        assert oracle.time_s <= replay_batch(traces, cfg, costs, batch_size).time_s * (1 + 1e-9), cfg


@pytest.fixture
def traces_folder(tmp_path, pair_and_traces):
    """An experiment folder as `entspec trace` leaves it (traces, their cost model, experiment.yaml) and a
    batch_costs.json as the runner writes it."""
    from entspec.experiment import ExperimentConfig

    _, _, _, traces = pair_and_traces
    folder = tmp_path / "exp" / "traces"
    for i, trace in enumerate(traces):
        trace.save(trace_path(folder, i, trace.meta.prompt_id))
    COST.save(folder / "cost_model.json")
    config = ExperimentConfig(drafter_model_path="drafter", verifier_model_path="verifier", dataset_name="mix",
                              num_samples=PROMPTS, max_new_tokens=NEW_TOKENS, output_dir=str(tmp_path / "exp"),
                              experiment_name="t")
    (folder / "experiment.yaml").write_text(config.to_yaml())
    costs = batch_costs().save(tmp_path / "exp" / "configs" / "batch_costs.json")
    return tmp_path / "exp", costs


def test_tune_chooses_per_batch_size(traces_folder, pair_and_traces):
    from entspec.cli import main
    from entspec.experiment import ExperimentConfig
    from entspec.replay.tune import split_prompts

    exp, costs = traces_folder
    assert main(["tune", str(exp), "--batch-size", "2", "--batch-costs", str(costs), "--rules", "fixed", "adaptive",
                 "--top", "1"]) == 0
    out = exp / "tune-b2"
    sweep = pd.read_csv(out / "sweep.csv")
    assert {json.loads(p).get("batch_stop", "rows") for p in sweep.params} == {"rows", "cost"}
    best = pd.read_csv(out / "best.csv")
    assert set(best.strategy) == {"fixed", "adaptive"}
    # The held-out figure is batch replay of the held-out prompts in batches of 2: a row's shares add up.
    _, _, _, traces = pair_and_traces
    held = [t for t, s in zip(traces, split_prompts(traces)) if s == "held_out"]
    chosen = best[(best.strategy == "fixed") & (best.category == "all")].iloc[0]
    cfg, model = EntropyConfig(**json.loads(chosen.params)), BatchCostModel.load(costs)
    assert chosen.held_out_speedup == pytest.approx(plain_batch(held, model, 2).time_s
                                                    / replay_batch(held, cfg, model, 2).time_s)
    # ... and its share of the oracle is the clairvoyant lock-step schedule's on the same batches
    rule_s = replay_batch(held, cfg, model, 2).time_s
    assert chosen.of_oracle == pytest.approx(batch_oracle(held, model, 2).time_s / rule_s)
    assert chosen.of_oracle_at_cap == pytest.approx(batch_oracle(held, model, 2, cap=cfg.max_draft_len).time_s / rule_s)
    text = (out / "tuned.yaml").read_text()
    assert text.startswith("# Settings tuned by `entspec")
    assert f"batches of 2, rounds priced by the batch costs {costs}" in text.splitlines()[0]
    tuned = yaml.safe_load(text)
    assert tuned["batch_size"] == 2 and tuned["methods"][0]["strategy"] == "fixed"
    ExperimentConfig(**tuned)  # a valid experiment, ready for `entspec run` at batch size 2
    assert "Batch size 2" in (out / "report.md").read_text()


def test_tune_with_packed_costs_writes_packed_settings(traces_folder, tmp_path):
    from entspec.cli import main

    exp, costs = traces_folder
    packed = tmp_path / "batch_costs-packed.json"
    BatchCostModel(**{**BatchCostModel.load(costs).to_dict(), "layout": "packed"}).save(packed)
    assert main(["tune", str(exp), "--batch-size", "2", "--batch-costs", str(packed), "--rules", "fixed", "svip",
                 "--top", "1"]) == 0
    tuned = yaml.safe_load((exp / "tune-b2" / "tuned.yaml").read_text())
    assert {m.get("batch_layout") for m in tuned["methods"]} == {"packed"}


def test_tune_refuses_a_batch_size_it_cannot_price_in_one_line(traces_folder, tmp_path, capsys):
    from entspec.cli import main

    exp, costs = traces_folder
    sampled = tmp_path / "sampled"
    save_npz(sampled / "0000-p.npz", {"kind": "sampled"}, {})
    (tmp_path / "garbage.json").write_text("{")
    for argv, message in [
        (["--batch-size", "2"], "--batch-costs: --batch-size 2 prices batch rounds with measured batch costs"),
        (["--batch-size", "2", "--batch-costs", str(tmp_path / "none.json")],
         re.escape(f"--batch-costs: {tmp_path / 'none.json'}: not a readable batch cost model")),
        (["--batch-size", "2", "--batch-costs", str(tmp_path / "garbage.json")],
         "--batch-costs: .*garbage.json: not a readable batch cost model"),
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
    ]:
        assert main(["tune", str(exp), *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(message, err), (argv, err)
    assert main(["tune", str(sampled), "--batch-size", "2", "--batch-costs", str(costs)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--batch-size: batch replay reads greedy traces only" in err


def test_a_rounds_first_step_costs_its_catch_up():
    """By hand, fixed k = 2, two 6-token traces the drafter gets right, 5-token prompts; a drafter prefill of the
    5 tokens in 2 rows costs 0.9 s, so a first step feeding n tokens a row costs 0.15 + 0.75 (n - 1) / 4.

    upfront:  round 1 drafts 2 after the prefill (catch-up 1)       2 x 0.15 + verify(2, 3) = 2.2
              round 2 drafts 2, catch-up 2 (all accepted)           0.3375 + 0.15 + 1.9 = 2.3875
    deferred: round 1 drafts nothing                                verify(2, 1) = 1.5
              round 2 drafts 2, catch-up 6 (prompt and 1st token)   1.0875 + 0.15 + 1.9 = 3.1375
              round 3 drafts 1 (2 tokens left), catch-up 2          0.3375 + verify(2, 2) = 2.0375
    """
    costs = BatchCostModel(draft_rows=[1, 2], draft_s=[0.1, 0.15], verify_rows=[1, 2], verify_widths=[1, 2, 3],
                           verify_s=[[1.0, 1.1, 1.2], [1.5, 1.7, 1.9]], cached_tokens=5, draft_prefill_s=[0.5, 0.9],
                           refine=False)
    traces = [fake_trace([True] * 6, name, prompt_len=5) for name in "ab"]
    upfront = replay_batch(traces, EntropyConfig(strategy="fixed", max_draft_len=2), costs, 2)
    assert [r.seconds for r in upfront.batches[0]] == pytest.approx([2.2, 2.3875])
    deferred = replay_batch(traces, EntropyConfig(strategy="fixed", max_draft_len=2, drafter_prefill="deferred"),
                            costs, 2)
    assert [r.seconds for r in deferred.batches[0]] == pytest.approx([1.5, 3.1375, 2.0375])
    assert deferred.rows[0].rounds() == [(0, 0, 1), (2, 2, 3), (1, 1, 2)]


def test_tune_prices_batches_with_the_batch_costs_traced_with_its_traces(traces_folder, capsys):
    """Without --batch-costs, `entspec tune --batch-size B` reads the batch costs `entspec trace` measured beside
    the traces (the same pair); costs measured for fewer rows than B are refused in one line."""
    from entspec.cli import main

    exp, costs = traces_folder
    beside = batch_costs().save(exp / "traces" / "batch_costs.json")
    assert main(["tune", str(exp), "--batch-size", "2", "--rules", "fixed", "--top", "1"]) == 0
    assert f"rounds priced by the batch costs {beside}" in (exp / "tune-b2" / "tuned.yaml").read_text()
    capsys.readouterr()
    small = BatchCostModel(**{**json.loads(Path(beside).read_text()), "verify_rows": [1, 2], "draft_rows": [1, 2],
                              "draft_s": [0.1, 0.1], "draft_prefill_s": [14.0, 14.0],
                              "verify_s": [[1.0] * 5, [1.0] * 5]}).save(beside)
    assert main(["tune", str(exp), "--batch-size", "4", "--rules", "fixed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--batch-costs: {small} was measured up to 2 rows, not 4") and len(err.splitlines()) == 1


def test_trace_measures_the_batch_costs_of_a_batched_experiment(tmp_path):
    """`entspec trace` on a config with batch_size > 1 measures the pair's batch costs into the traces folder,
    up to that many rows; a rerun keeps them, a larger batch size measures again."""
    from entspec.cli import main
    from tiny import tiny_experiment_yaml

    config = tiny_experiment_yaml(tmp_path, num_samples=2, max_new_tokens=4, batch_size=2)
    assert main(["trace", str(config)]) == 0
    path = tmp_path / "exp" / "traces" / "batch_costs.json"
    costs = BatchCostModel.load(path)
    assert costs.verify_rows == [1, 2] and costs.draft_prefill_s and costs.threads == 1
    stamp = path.stat().st_mtime_ns
    assert main(["trace", str(config)]) == 0 and path.stat().st_mtime_ns == stamp
    assert main(["trace", str(config), "--set", "batch_size=4"]) == 0
    assert BatchCostModel.load(path).verify_rows == [1, 2, 4]
    unbatched = tiny_experiment_yaml(tmp_path / "one", num_samples=2, max_new_tokens=4)
    assert main(["trace", str(unbatched)]) == 0
    assert not (tmp_path / "one" / "exp" / "traces" / "batch_costs.json").exists()
