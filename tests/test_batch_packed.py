"""The packed batch layout (`EntropyConfig(batch_layout="packed")`, `PackedBatchCache`) is lossless row by row, as
the padded one is (tests/test_batch.py), and pads nothing: a verifier call feeds the rows' pending tokens and
drafts back to back (up to a fast token count, `bucket`).

Its own traps: one sequence holds every row (a token must see its own row's positions only, in order), a row with
an empty segment adds nothing, rolled-back positions become holes in the middle of the sequence, finished rows
become holes, compaction drops holes, and long feeds (prefills) go row by row.
"""

from collections import Counter

import pytest
import torch

from entspec import STOPPING_CRITERIA, EntropyBasedSpeculativeDecoder, EntropyConfig, SamplingParams
from entspec.engine.batch_cost import BatchCostModel, row_step_pays
from entspec.engine.batch_kv import BatchCache, PackedBatchCache, bucket
from stats_helpers import chi2_pvalue
from tiny import context_free_gpt2, greedy_cases, perturbed

NEW_TOKENS = 16


def packed(**kwargs) -> EntropyConfig:
    return EntropyConfig(batch_layout="packed", **kwargs)


@pytest.fixture(scope="module")
def partial(verifier):
    return perturbed(verifier, noise=0.05)


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 8, NEW_TOKENS, max_prompt_len=12)  # prompt lengths 1..8


@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_every_row_equals_the_verifier_greedy_output(strategy, verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy=strategy, theta_abs=1.0,
                                                                       max_draft_len=5))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    drafted = sum(r.drafted for res in results for r in res.rounds)
    accepted = sum(r.accepted for res in results for r in res.rounds)
    assert 0.1 < accepted / drafted < 0.95  # uneven acceptance: holes in the middle of the packed sequence


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_rows_finishing_at_different_rounds(size, verifier, partial, cases):
    eos = Counter(t for _, ref in cases for t in ref[2:10]).most_common(1)[0][0]
    refs = [(p, verifier.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  eos_token_id=eos)[0, p.shape[1]:].tolist()) for p, _ in cases[:size]]
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy="adaptive", theta_abs=1.0,
                                                                       max_draft_len=4))
    results = decoder.generate_batch([p for p, _ in refs], max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    assert [r.new_tokens for r in results] == [ref for _, ref in refs]


def test_the_same_rounds_as_the_padded_layout(verifier, partial, cases):
    """The layout changes what a forward costs, never a decision: every row drafts, stops and is verified as in
    the padded layout (gate on, so the rule state is exercised)."""
    runs = {}
    for layout in ("padded", "packed"):
        cfg = EntropyConfig(strategy="adaptive", theta_abs=1.0, max_draft_len=5, gate=True, batch_layout=layout)
        runs[layout] = EntropyBasedSpeculativeDecoder(partial, verifier, cfg).generate_batch(
            [p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    for a, b in zip(runs["padded"], runs["packed"]):
        assert [(r.drafted, r.accepted, r.stop_reason) for r in a.rounds] == [
            (r.drafted, r.accepted, r.stop_reason) for r in b.rounds]
        assert [h for r in a.rounds for h in r.entropies] == pytest.approx(
            [h for r in b.rounds for h in r.entropies], abs=1e-4)


def test_forwards_feed_no_padding(verifier, partial, cases):
    """Each verifier call feeds sum over rows of (1 + drafted) tokens (up to its `bucket`) as one sequence; the
    drafter's lock step stays padded, one forward per step: counted at the models' own forwards."""
    fed = {"verifier": [], "drafter": []}
    hooks = [model.register_forward_hook(lambda m, args, kwargs, out, name=name: fed[name].append(
        kwargs["input_ids"].shape), with_kwargs=True) for name, model in (("verifier", verifier), ("drafter", partial))]
    try:
        decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy="svip", max_draft_len=6))
        results = decoder.generate_batch([p for p, _ in cases[:4]], max_new_tokens=NEW_TOKENS)
    finally:
        for hook in hooks:
            hook.remove()
    assert all(shape[0] == 1 for shape in fed["verifier"])  # one packed sequence
    calls = fed["verifier"][1:]  # after the prefill
    rounds = max(len(r.rounds) for r in results)
    assert len(calls) == rounds
    for k, shape in enumerate(calls):
        assert shape[1] == bucket(sum(1 + r.rounds[k].drafted for r in results if k < len(r.rounds)))
    steps = sum(max(r.rounds[k].drafted for r in results if k < len(r.rounds)) for k in range(rounds))
    assert len(fed["drafter"]) - 1 == steps  # drafter forwards after its prefill: one per lock-step step
    assert sum(r.drafted for res in results for r in res.rounds) < len(results) * steps  # rows stopped unevenly


def test_forwards_run_a_fast_token_count_and_keep_no_filler():
    assert [bucket(n) for n in (0, 1, 2, 4, 5, 8, 9, 15, 16, 17, 24, 25)] == [0, 1, 4, 4, 8, 8, 16, 16, 16, 24, 24, 32]


def test_filler_tokens_leave_nothing_behind(verifier):
    cache = PackedBatchCache(verifier)
    cache.reset(2)
    cache.feed([[1, 2, 3], [4, 5]], "left")  # 5 tokens run as 8
    assert cache.cache.get_seq_length() == 5 and cache.owner.tolist() == [0, 0, 0, 1, 1]
    cache.feed([[6], []], "left")
    assert cache.cache.get_seq_length() == 6 and cache.lengths == [4, 2]


def test_compaction_every_round_keeps_rows_exact(verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy="fixed", max_draft_len=5))
    decoder.generate_batch([cases[0][0]], max_new_tokens=1)  # builds the batched loop
    cache = decoder._batch.verifier
    assert isinstance(cache, PackedBatchCache) and type(decoder._batch.drafter) is BatchCache
    cache.compact_slack = 0
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert cache.compactions >= 2


def test_long_feeds_go_row_by_row_with_the_same_logits(verifier):
    prompts = [list(range(1, 40)), list(range(5, 30)), [], list(range(2, 9))]
    logits = {}
    for name, cache in (("padded", BatchCache(verifier)), ("packed", PackedBatchCache(verifier)),
                        ("row by row", PackedBatchCache(verifier))):
        if name == "row by row":
            cache.ROW_BY_ROW_TOKENS = 10
        cache.reset(len(prompts))
        last = cache.feed(prompts, "left", logits_to_keep=1)
        nxt = cache.feed([[7, 8, 9], [3], [4, 5], [6, 6]], "right")
        logits[name] = (last, nxt)
    for name in ("packed", "row by row"):
        for i in (0, 1, 3):  # row 2 had no prompt: its left-aligned column is padding in the padded layout
            torch.testing.assert_close(logits[name][0][i], logits["padded"][0][i], atol=1e-4, rtol=1e-4)
        for i, n in enumerate((3, 1, 2, 2)):
            torch.testing.assert_close(logits[name][1][i, :n], logits["padded"][1][i, :n], atol=1e-4, rtol=1e-4)
            assert not logits[name][1][i, n:].any()  # no token there: zeros


def test_rollback_makes_holes_crops_compacts_and_selects(verifier):
    cache = PackedBatchCache(verifier, compact_slack=100)
    cache.reset(2)
    cache.feed([[1, 2, 3], [4]], "left")
    cache.feed([[5, 6, 7], [8, 9]], "right")
    assert cache.lengths == [6, 3] and cache.owner.tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 1]
    cache.rollback([4, 2])  # row 0 keeps one of its three, row 1 one of its two: the trailing hole is cropped
    assert cache.lengths == [4, 2]
    assert cache.owner.tolist() == [0, 0, 0, 1, 0, -1, -1, 1]
    assert cache.cache.get_seq_length() == 8
    cache.compact()
    assert cache.owner.tolist() == [0, 0, 0, 1, 0, 1] and cache.cache.get_seq_length() == 6
    cache.select([1])  # row 0 leaves: its positions become holes
    assert cache.lengths == [2] and cache.owner.tolist() == [-1, -1, -1, 0, -1, 0]
    cache.feed([[3]], "right")
    assert cache.lengths == [3] and cache.owner.tolist() == [-1, -1, -1, 0, -1, 0, 0]
    cache.rollback([1])  # the holes at the end go, and the middle ones wait for compaction
    assert cache.owner.tolist() == [-1, -1, -1, 0]


@pytest.mark.parametrize("temperature,top_p", [(1.0, None), (0.7, 0.9)])
def test_a_rows_sampled_tokens_do_not_depend_on_its_batch_mates(temperature, top_p, verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy="adaptive", theta_abs=1.0,
                                                                       max_draft_len=5))
    prompts = [p for p, _ in cases]
    kwargs = dict(max_new_tokens=24, temperature=temperature, top_p=top_p)
    together = decoder.generate_batch(prompts, seed=list(range(8)), **kwargs)
    reordered = decoder.generate_batch(prompts[::-1][:5], seed=list(range(8))[::-1][:5], **kwargs)
    for i, prompt in enumerate(prompts):
        assert together[i].new_tokens == decoder.generate(prompt, seed=i, **kwargs).new_tokens
    for j, result in enumerate(reordered):
        assert result.new_tokens == together[7 - j].new_tokens


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.8)])
def test_each_row_of_a_packed_batch_is_iid_from_p(setting):
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter = context_free_gpt2(target_logits + torch.randn(12, generator=gen))
    verifier = context_free_gpt2(target_logits)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, packed(strategy="absolute", theta_abs=1.8,
                                                                       max_draft_len=4))
    prompts = [torch.tensor([[0] * n]) for n in (1, 3, 2, 5)]
    results = decoder.generate_batch(prompts, max_new_tokens=600, seed=[3, 4, 5, 6], ignore_eos=True, **setting)
    p = torch.softmax(SamplingParams(**setting).process(target_logits[None]), -1)[0].numpy()
    for result in results:
        assert len(result.new_tokens) == 600
        assert sum(r.accepted for r in result.rounds) < sum(r.drafted for r in result.rounds)
        assert chi2_pvalue(result.new_tokens, p) > 1e-3


def test_batched_autoregressive_packed_equals_the_verifier(verifier, cases):
    decoder = EntropyBasedSpeculativeDecoder(None, verifier, packed())
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]


# ---------------------------------------------------------------------------------------------- the cost stop, packed
def packed_costs(draft: float = 0.1, per_token: float = 0.05) -> BatchCostModel:
    """Synthetic packed costs (the tiny models' timings never refine them): a drafter step of ``draft``; a verifier
    call of 1.0 plus ``per_token`` per token it runs (rows x positions per row)."""
    rows, widths = [1, 2, 4, 8], [1, 2, 4, 8, 12]
    return BatchCostModel(draft_rows=rows, draft_s=[draft] * 4, verify_rows=rows, verify_widths=widths,
                          verify_s=[[1.0 + per_token * b * w for w in widths] for b in rows], refine=False,
                          layout="packed")


def test_a_packed_round_costs_its_tokens_bucketed():
    model = packed_costs(draft=0.1, per_token=0.05)
    assert model.round_s([0, 0, 0, 0]) == pytest.approx(1.0 + 0.05 * 4)
    assert model.round_s([3, 1, 0, 0]) == pytest.approx(3 * 0.1 + 1.0 + 0.05 * 8)  # 8 tokens run as 8
    assert model.round_s([3, 2, 0, 0]) == pytest.approx(3 * 0.1 + 1.0 + 0.05 * 16)  # 9 tokens run as 16
    padded = BatchCostModel(**{**model.to_dict(), "layout": "padded"})
    assert padded.round_s([3, 1, 0, 0]) == pytest.approx(3 * 0.1 + 1.0 + 0.05 * 16)  # 4 rows x 4 positions


def test_a_row_stops_on_its_own_tokens_cost_while_a_confident_one_drafts_on():
    model = packed_costs(draft=0.01, per_token=0.1)
    drafts, expected = [3, 3, 3, 3], 4 + 4 * 1.5  # 16 tokens: the next one opens the bucket of 24
    assert row_step_pays(model, drafts, expected, (0.8, 0.9, 8))  # a likely run of accepted tokens
    assert not row_step_pays(model, drafts, expected, (0.2, 0.2, 8))  # its next tokens will be rejected
    assert row_step_pays(model, [2, 2, 2, 2], expected, (0.2, 0.2, 8))  # 12 tokens run as 16: the next is free


@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_every_row_equals_the_verifier_greedy_output_with_the_packed_cost_stop(strategy, verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy=strategy, theta_abs=1.0,
                                                                       max_draft_len=6, batch_stop="cost"))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS,
                                     batch_costs=packed_costs(draft=0.02, per_token=0.03))
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert sum(r.drafted for res in results for r in res.rounds) > 0


def test_rows_of_one_round_stop_at_different_lengths_under_the_packed_cost_stop(verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(strategy="fixed", max_draft_len=8,
                                                                       batch_stop="cost"))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS,
                                     batch_costs=packed_costs(draft=0.01, per_token=0.08))
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    rounds = min(len(r.rounds) for r in results)
    uneven = [k for k in range(rounds) if len({r.rounds[k].drafted for r in results}) > 1]
    assert uneven, "a fixed rule drafts alike in every row: only the per-row cost stop makes rows differ"
    assert any(r.rounds[k].stop_reason == "batch_cost" for r in results for k in uneven
               if r.rounds[k].drafted < max(x.rounds[k].drafted for x in results))


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7)])
def test_each_row_is_iid_from_p_with_the_packed_cost_stop(setting):
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter = context_free_gpt2(target_logits + torch.randn(12, generator=gen))
    verifier = context_free_gpt2(target_logits)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, packed(strategy="fixed", max_draft_len=6,
                                                                       batch_stop="cost"))
    prompts = [torch.tensor([[0] * n]) for n in (1, 3, 2, 5)]
    results = decoder.generate_batch(prompts, max_new_tokens=600, seed=[3, 4, 5, 6], ignore_eos=True,
                                     batch_costs=packed_costs(draft=0.05, per_token=0.08), **setting)
    p = torch.softmax(SamplingParams(**setting).process(target_logits[None]), -1)[0].numpy()
    assert len({r.drafted for res in results for r in res.rounds}) > 1
    for result in results:
        assert len(result.new_tokens) == 600
        assert chi2_pvalue(result.new_tokens, p) > 1e-3


def test_costs_measured_in_the_other_layout_are_refused_in_one_line(verifier, partial, cases):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(batch_stop="cost"))
    padded = BatchCostModel(**{**packed_costs().to_dict(), "layout": "padded"})
    with pytest.raises(ValueError, match="batch_costs: measured in the padded layout; this decoder runs the packed"):
        decoder.generate_batch([cases[0][0]], max_new_tokens=4, batch_costs=padded)
    with pytest.raises(ValueError, match="layout: must be one of padded, packed"):
        BatchCostModel(**{**packed_costs().to_dict(), "layout": "ragged"})


def test_calibration_in_the_packed_layout(verifier, partial):
    decoder = EntropyBasedSpeculativeDecoder(partial, verifier, packed(batch_stop="cost"))
    model = decoder.calibrate_batch(torch.tensor([[3, 4, 5, 6, 7]]), rows=(1, 2), widths=(1, 2, 3))
    assert model.layout == "packed" and len(model.verify_s) == 2 and len(model.verify_s[0]) == 3
