"""A deferred drafter prefill (``drafter_prefill: deferred``): the verifier's prefill gives the first token alone,
the first round drafts nothing and the drafter reads the committed sequence when the second round drafts. The
output is still exactly the verifier's (greedy, every rule, single and batched) and follows its distribution
(sampling); only when the drafter's prefill runs changes."""

import pytest
import torch

from entspec import STOPPING_CRITERIA, BatchCostModel, ConfigError, EntropyBasedSpeculativeDecoder, EntropyConfig
from test_sampled_distribution import first_two_follow_the_verifier
from tiny import greedy_cases, perturbed, tiny_llama

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 5, NEW_TOKENS, max_prompt_len=10)


def deferred(**values) -> EntropyConfig:
    return EntropyConfig(drafter_prefill="deferred", theta_abs=1.0, max_draft_len=5, **values)


@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_greedy_output_is_the_verifiers_and_the_first_round_drafts_nothing(strategy, verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy=strategy))
    drafted = 0
    for prompt, reference in cases:
        result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference
        first = result.rounds[0]
        assert (first.drafted, first.emitted, first.stop_reason) == (0, 1, "deferred")
        drafted += sum(r.drafted for r in result.rounds)
    assert drafted > 0  # the later rounds draft


def test_the_drafter_reads_nothing_until_the_second_round(verifier, drafter, cases):
    prompt, reference = cases[0]
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy="fixed"))
    decoder.drafter.start(prompt)
    assert not decoder.drafter.filled and len(decoder.drafter.lm) == 0
    result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert decoder.drafter.filled and result.rounds[1].drafted > 0
    # with a window the deferred prefill reads the last N committed tokens, the first new one included
    windowed = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy="fixed", drafter_context=3))
    assert windowed.generate(prompt, max_new_tokens=NEW_TOKENS).new_tokens == reference


@pytest.mark.parametrize("batch_stop", ["rows", "cost"])
@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_batched_rows_are_the_verifiers(strategy, batch_stop, verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy=strategy, batch_stop=batch_stop))
    costs = BatchCostModel(draft_rows=[1, 8], draft_s=[0.1, 0.1], verify_rows=[1, 8], verify_widths=[1, 12],
                           verify_s=[[1.0, 1.1], [1.0, 1.1]], refine=False)
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS, batch_costs=costs)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert all(r.rounds[0].drafted == 0 and r.rounds[0].stop_reason == "deferred" for r in results)
    assert sum(r.drafted for res in results for r in res.rounds) > 0


def test_a_batch_that_never_drafts_never_prefills_the_drafter(verifier, drafter, cases):
    """batch_stop="cost" on a verifier whose every extra position costs a full call: no step pays, so the deferred
    drafter never runs, and the rows are still the verifier's."""
    costs = BatchCostModel(draft_rows=[1, 8], draft_s=[0.5, 0.5], verify_rows=[1, 8], verify_widths=[1, 12],
                           verify_s=[[1.0, 12.0], [1.0, 12.0]], refine=False)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy="fixed", batch_stop="cost"))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS, batch_costs=costs)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert sum(r.drafted for res in results for r in res.rounds) == 0
    assert decoder._batch_decoder().drafter.cache.get_seq_length() == 0


def test_the_batch_stop_prices_the_deferred_prefill(verifier, drafter, cases):
    """Drafting pays on these costs, but not once the drafter's prefill of the prompts is priced (100 s over the
    prompt's tokens): the batch never starts drafting, and never runs the drafter."""
    rows, widths = [1, 8], [1, 12]
    cheap = BatchCostModel(draft_rows=rows, draft_s=[0.1, 0.1], verify_rows=rows, verify_widths=widths,
                           verify_s=[[1.0, 1.1], [1.0, 1.1]], refine=False)
    priced = BatchCostModel(**{**cheap.to_dict(), "cached_tokens": 8, "draft_prefill_s": [100.0, 100.0]})
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, deferred(strategy="fixed", batch_stop="cost"))
    prompts = [p for p, _ in cases]
    drafts = decoder.generate_batch(prompts, max_new_tokens=NEW_TOKENS, batch_costs=cheap)
    assert sum(r.drafted for res in drafts for r in res.rounds) > 0
    results = decoder.generate_batch(prompts, max_new_tokens=NEW_TOKENS, batch_costs=priced)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert sum(r.drafted for res in results for r in res.rounds) == 0
    assert {r.stop_reason for res in results for r in res.rounds[1:]} <= {"batch_cost", "max_new_tokens"}
    assert decoder._batch_decoder().drafter.cache.get_seq_length() == 0


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7)])
def test_sampled_tokens_follow_the_verifier(setting):
    """The first token comes from the verifier's prefill alone, the second from the first drafted round: the joint
    of the two is p(t1) p(t2 | t1)."""
    verifier = tiny_llama(vocab=8, sharpness=6.0)
    drafter = perturbed(verifier, noise=0.3)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=3,
                                                                              drafter_prefill="deferred"))
    first_two_follow_the_verifier(decoder, verifier, torch.tensor([[1, 5, 2]]), setting)


def test_the_setting_is_validated_naming_the_field():
    with pytest.raises(ConfigError, match="^drafter_prefill"):
        EntropyConfig(drafter_prefill="later")


def test_replay_charges_the_drafters_prefill_to_the_round_that_drafts_first(verifier, drafter, cases):
    """Replay's time to first token leaves the drafter's prefill out, and its total keeps it (over the committed
    sequence then: one token longer)."""
    from entspec.replay.cost import CostModel
    from entspec.replay.engine import replay
    from entspec.replay.trace import record_trace

    prompt, _ = cases[0]
    trace = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=5, prompt_id="p0")
    cost = CostModel(draft_step_s=0.2, verify_tokens=[1, 8], verify_s=[1.0, 1.3], overhead_round_s=0.0,
                     prefill_s_per_token={"drafter": 0.5, "verifier": 2.0},
                     prefill_s_fixed={"drafter": 0.0, "verifier": 0.0})
    upfront = replay(trace, EntropyConfig(strategy="fixed", max_draft_len=3), cost)
    late = replay(trace, EntropyConfig(strategy="fixed", max_draft_len=3, drafter_prefill="deferred"), cost)
    length = prompt.shape[1]
    assert late.to_generation_result(trace, cost).time_to_first_token_s == pytest.approx(2.0 * length)
    assert upfront.to_generation_result(trace, cost).time_to_first_token_s > 2.5 * length
    assert late.drafted[0] == 0 and late.round_s[1] >= 0.5 * (length + 1)
