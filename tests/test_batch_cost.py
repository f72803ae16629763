"""The batch cost model and the batch's stop (``batch_stop="cost"``): priced decisions, never other tokens.

The stop only decides how far the lock step drafts, so every row stays exactly the verifier's output (greedy)
and its distribution (sampling) whatever the costs say; the costs decide whether it drafts at all.
"""

import json

import pytest
import torch

from entspec import STOPPING_CRITERIA, BatchCostModel, EntropyBasedSpeculativeDecoder, EntropyConfig, SamplingParams
from entspec.engine.batch import ACCEPTANCE_PRIOR, lock_step_continues, replay_row
from entspec.engine.batch_cost import batch_step_pays, catch_up_pays
from entspec.engine.round import DraftLimit
from stats_helpers import chi2_pvalue
from tiny import context_free_gpt2, greedy_cases

NEW_TOKENS = 16


def costs(draft: float, verify_flat_to: int = 16, verify_slope: float = 0.1, refine: bool = False) -> BatchCostModel:
    """Synthetic costs: a drafter step of ``draft`` (any rows); the verifier 1.0 up to ``verify_flat_to``
    positions in all, then ``verify_slope`` per position (the shape measured on a CPU). Not refined by the tiny
    models' real timings unless ``refine``."""
    rows, widths = [1, 2, 4, 8], [1, 2, 4, 8, 12]
    verify = [[1.0 + verify_slope * max(0, b * w - verify_flat_to) for w in widths] for b in rows]
    return BatchCostModel(draft_rows=rows, draft_s=[draft] * 4, verify_rows=rows, verify_widths=widths,
                          verify_s=verify, refine=refine)


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 6, NEW_TOKENS, max_prompt_len=10)


def test_the_model_interpolates_and_extrapolates_its_measured_points():
    model = costs(draft=0.2)
    assert model.verify(4, 4) == pytest.approx(1.0)
    assert model.verify(8, 4) == pytest.approx(1.0 + 0.1 * 16)
    assert model.verify(8, 16) == pytest.approx(1.0 + 0.1 * (8 * 16 - 16))  # past the last width: linear
    assert model.draft(3) == pytest.approx(0.2)


def test_the_step_is_taken_while_its_rate_beats_the_rounds():
    model = costs(draft=0.25)
    # Before the first step, 4 rows: the round so far emits 4 tokens in 1.0 s; a step adds 4 x 0.9 tokens in 0.25 s.
    assert batch_step_pays(model, 4, 0, expected=4.0, chances=[(1.0, 0.9, 1)] * 4)
    # The same step when each row's next token is a coin flip at best: 4 x 0.2 tokens in 0.25 s < 4 per second.
    assert not batch_step_pays(model, 4, 0, expected=4.0, chances=[(1.0, 0.2, 1)] * 4)
    # 8 rows on a verifier flat to 8 positions: a second position per row costs it 0.8 s; no number of steps pays.
    assert not batch_step_pays(costs(draft=0.25, verify_flat_to=8), 8, 0, expected=8.0, chances=[(1.0, 0.9, 6)] * 8)


def test_the_stop_looks_past_a_step_that_costs_more_than_the_ones_after_it():
    # One row on the verify curve measured on the CPU: 2 positions cost more than 4.
    model = BatchCostModel(draft_rows=[1], draft_s=[0.21], verify_rows=[1], verify_widths=[1, 2, 4, 8],
                           verify_s=[[0.54, 0.77, 0.73, 1.10]], refine=False)
    # One step: 0.8 tokens for 0.44 s, below the round's 1 / 0.54 per second; three steps: 1.95 for 0.82 s.
    assert not batch_step_pays(model, 1, 0, expected=1.0, chances=[(1.0, 0.8, 1)])
    assert batch_step_pays(model, 1, 0, expected=1.0, chances=[(1.0, 0.8, 3)])
    # A row adds nothing past its own limit: with rooms 1 and 3 only one row carries steps 2 and 3.
    two = BatchCostModel(draft_rows=[2], draft_s=[0.21], verify_rows=[2], verify_widths=[1, 2, 4, 8],
                         verify_s=[[0.54, 0.77, 0.73, 1.10]], refine=False)
    assert batch_step_pays(two, 2, 0, expected=2.0, chances=[(1.0, 0.8, 3), (1.0, 0.8, 3)])
    assert not batch_step_pays(two, 2, 0, expected=2.0, chances=[(1.0, 0.8, 3), (1.0, 0.8, 1)])


def cpu_b8(prefill: bool = True) -> BatchCostModel:
    """The B = 8 costs measured on the 2-core CPU (fp32 1.5B verifier, 0.5B drafter, ~150 cached tokens)."""
    return BatchCostModel(draft_rows=[1, 8], draft_s=[0.1, 0.2], verify_rows=[1, 8], verify_widths=[1, 2, 4],
                          verify_s=[[0.5, 0.55, 0.6], [0.75, 0.814, 0.9]], cached_tokens=150,
                          draft_prefill_s=[1.5, 9.4] if prefill else [], refine=False)


def test_a_catch_up_is_priced_between_a_step_and_the_measured_prefill():
    model = cpu_b8()
    assert model.draft_feed(8, 1) == pytest.approx(0.2) and model.draft_feed(8, 150) == pytest.approx(9.4)
    assert model.draft_feed(8, 75.5) == pytest.approx(0.2 + 9.2 / 2)
    assert model.draft_feed(4, 150) == pytest.approx(1.5 + (9.4 - 1.5) * 3 / 7)  # rows interpolated
    assert cpu_b8(prefill=False).draft_feed(8, 150) == pytest.approx(0.2)  # a table measured before: one step


def test_a_drafter_prefill_is_paid_only_where_the_tokens_left_earn_it_back():
    # 8 rows, each token accepted at 0.6: one drafted token a round raises the rate from 10.7 to 12.6 tokens/s,
    # 0.0145 s saved a token; the prefill's extra 9.2 s needs ~640 tokens left to earn back.
    chances = [(0.6, 6)] * 8
    assert not catch_up_pays(cpu_b8(), 8, 150, left=8 * 31, chances=chances)
    assert catch_up_pays(cpu_b8(), 8, 150, left=8 * 500, chances=chances)
    assert catch_up_pays(cpu_b8(prefill=False), 8, 150, left=8 * 31, chances=chances)  # unpriced: always
    assert not catch_up_pays(cpu_b8(), 8, 150, left=10_000, chances=[(0.05, 6)] * 8)  # drafting never pays


def test_a_row_that_stopped_the_batch_drafting_is_weighed_afresh_after_rounds_without_drafts():
    # 4 rows on the synthetic CPU curve, a step at 0.25 s: it pays at the prior's acceptance (0.6), not at 0.2.
    rows = [replay_row(i, EntropyConfig(strategy="fixed", max_draft_len=4, batch_stop="cost")) for i in range(4)]
    for row in rows:
        row.limit = DraftLimit(4, "max_draft_len")
    assert lock_step_continues(costs(draft=0.25), rows, [True] * 4, 0, None)
    for _ in range(3):  # rounds whose drafts were all rejected at the first token
        for row in rows:
            row.heard(4, 0, [0.9] * 4)
    assert max(row.acceptance for row in rows) < 0.2
    assert not lock_step_continues(costs(draft=0.25), rows, [True] * 4, 0, None)
    # Rounds that drafted nothing tell nothing: the estimate relaxes toward the prior, and drafting is tried again
    # (before, the low estimate stayed for good, as only drafting could revise it).
    refused = 0
    while not lock_step_continues(costs(draft=0.25), rows, [True] * 4, 0, None):
        refused += 1
        assert refused <= 8, "the batch never drafts again"
        for row in rows:
            row.heard(0, 0, [])
    assert refused >= 1 and rows[0].acceptance < ACCEPTANCE_PRIOR[0] / ACCEPTANCE_PRIOR[1]


def test_a_saved_model_loads_back_and_a_bad_one_is_named(tmp_path):
    path = costs(draft=0.2).save(tmp_path / "batch_costs.json")
    assert BatchCostModel.load(path).verify(2, 8) == pytest.approx(1.0)
    data = json.loads(path.read_text())
    data["verify_widths"] = [1, 4, 2, 8, 12]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="batch_costs.json: verify_widths: must be strictly increasing"):
        BatchCostModel.load(path)
    data["verify_widths"], data["draft_prefill_s"] = [1, 2, 4, 8, 12], [1.0, 2.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="draft_prefill_s: must be 4 finite seconds > 0"):
        BatchCostModel.load(path)
    data["draft_prefill_s"], data["draft_s"] = [], [0.1, float("nan"), 0.1, 0.1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="draft_s: must be 4 finite seconds > 0"):
        BatchCostModel.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not a readable batch cost model"):
        BatchCostModel.load(path)


@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_every_row_equals_the_verifier_greedy_output_with_the_batch_stop(strategy, verifier, drafter, cases):
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=6, batch_stop="cost")
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS, batch_costs=costs(0.1))
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert sum(r.drafted for res in results for r in res.rounds) > 0


def test_the_costs_decide_how_far_the_batch_drafts(verifier, drafter, cases):
    cfg = EntropyConfig(strategy="fixed", max_draft_len=8, batch_stop="cost")
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
    prompts = [p for p, _ in cases]

    def drafted(model):
        results = decoder.generate_batch(prompts, max_new_tokens=NEW_TOKENS, batch_costs=model)
        assert [r.new_tokens for r in results] == [ref for _, ref in cases]
        return [r for res in results for r in res.rounds]

    free = drafted(costs(draft=1e-4, verify_flat_to=10_000))  # drafting costs nothing: draft to the cap
    assert max(r.drafted for r in free) == 8
    costly = drafted(costs(draft=5.0))  # a drafter step costs five verifier calls: never draft
    assert all(r.drafted == 0 for r in costly)
    assert {r.stop_reason for r in costly} == {"batch_cost", "max_new_tokens"}  # the last round has no budget
    middle = drafted(costs(draft=0.1, verify_flat_to=12))  # 6 rows: wider than 2 positions costs the verifier
    assert 0 < sum(r.drafted for r in middle) < sum(r.drafted for r in free)
    assert "batch_cost" in {r.stop_reason for r in middle}


def test_the_batch_stop_needs_a_cost_model_named_in_one_line(verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(batch_stop="cost"))
    with pytest.raises(ValueError, match="batch_costs: batch_stop='cost' needs a measured BatchCostModel"):
        decoder.generate_batch([cases[0][0]], max_new_tokens=4)


def test_calibration_measures_every_point_on_the_pair(verifier, drafter):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(batch_stop="cost"))
    model = decoder.calibrate_batch(torch.tensor([[1, 5, 9, 2]]), rows=(1, 2), widths=(1, 3))
    assert model.verify_rows == [1, 2] and model.verify_widths == [1, 3] and model.cached_tokens == 4
    assert all(s > 0 for row in model.verify_s for s in row) and all(s > 0 for s in model.draft_s)
    assert len(model.draft_prefill_s) == 2 and all(s > 0 for s in model.draft_prefill_s)
    assert len(decoder.generate_batch([torch.tensor([[3, 4]])] * 2, max_new_tokens=5)) == 2  # uses it


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7)])
def test_each_row_is_iid_from_p_with_the_batch_stop(setting):
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter, verifier = context_free_gpt2(target_logits + torch.randn(12, generator=gen)), context_free_gpt2(target_logits)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=6,
                                                                              batch_stop="cost"))
    prompts = [torch.tensor([[0] * n]) for n in (1, 3, 2, 5)]
    results = decoder.generate_batch(prompts, max_new_tokens=600, seed=[3, 4, 5, 6], ignore_eos=True,
                                     batch_costs=costs(draft=0.15, verify_flat_to=8), **setting)
    p = torch.softmax(SamplingParams(**setting).process(target_logits[None]), -1)[0].numpy()
    lengths = {r.drafted for res in results for r in res.rounds}
    assert len(lengths) > 1 and max(lengths) < 6  # the batch stop cut drafts short of the cap
    for result in results:
        assert len(result.new_tokens) == 600
        assert chi2_pvalue(result.new_tokens, p) > 1e-3


def test_generate_with_the_batch_stop_is_a_batch_of_one(verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                              batch_stop="cost"))
    decoder.generate_batch([cases[0][0]], max_new_tokens=2, batch_costs=costs(draft=0.1))
    prompt, reference = cases[1]
    result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.new_tokens == reference and result.batch == {"size": 1, "row": 0}
    assert sum(r.drafted for r in result.rounds) > 0


def test_observed_rounds_refine_the_measured_costs():
    model = costs(draft=0.2, refine=True)
    model.observe("verify", 4, 1, 2.0)  # calls of 4 rows cost twice what was measured
    assert model.verify(4, 1) == pytest.approx(2.0)
    assert model.verify(4, 2) == pytest.approx(2.0)  # unobserved width: measured x the observed ratio
    assert model.verify(2, 2) == pytest.approx(1.0)  # other row counts keep the measurement
    model.observe("verify", 4, 1, 1.0)
    assert model.verify(4, 1) == pytest.approx(0.7 * 2.0 + 0.3 * 1.0)
    model.observe("draft", 4, 1, 0.5)
    assert model.draft(4) == pytest.approx(0.5) and model.draft(2) == pytest.approx(0.2)
    assert "_seen" not in model.to_dict()
    frozen = costs(draft=0.2)
    frozen.observe("draft", 4, 1, 0.5)
    assert frozen.draft(4) == pytest.approx(0.2)


def test_a_decoder_refines_the_costs_with_its_own_rounds(verifier, drafter, cases):
    model = costs(draft=0.1, refine=True)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                              batch_stop="cost"))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS, batch_costs=model)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    refined = decoder._batch_decoder().refined
    assert refined.verify(6, 1) < 0.5  # the tiny verifier's real calls (milliseconds) replaced the made-up 1 s


def test_each_call_refines_its_own_copy_of_the_costs(verifier, drafter, cases):
    """Rounds of one call never reach the caller's table or the next call: methods timed one after the other in a
    process (the runner shares one table) price their steps from the same measured costs."""
    model = costs(draft=0.1, refine=True)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                              batch_stop="cost"))
    decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS, batch_costs=model)
    first = decoder._batch_decoder().refined
    assert model.verify(6, 1) == model.measured_verify(6, 1) == 1.0 and model.draft(6) == model.measured_draft(6)
    decoder.generate_batch([p for p, _ in cases[:2]], max_new_tokens=2, batch_costs=model)
    second = decoder._batch_decoder().refined
    assert second is not first and second.verify(6, 1) == 1.0  # 2 rows this time: nothing of 6 rows carried over
