"""Batched decoding (`generate_batch`) is lossless row by row: each row equals the verifier's own unbatched
output (greedy), follows the verifier's distribution (sampling), and does not depend on its batch-mates.

One test per trap of ragged batches: prompts of different lengths (left padding), a padded input batch (left
or right), rows that finish at different rounds (EOS, budget), uneven acceptance (holes in the caches) and
cache compaction, for every registered rule and B = 1..8.
"""

from collections import Counter

import pytest
import torch

from entspec import STOPPING_CRITERIA, EntropyBasedSpeculativeDecoder, EntropyConfig, SamplingParams
from entspec.engine.batch_kv import BatchCache
from stats_helpers import chi2_pvalue
from tiny import context_free_gpt2, greedy_cases, perturbed, tiny_llama

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def drafters(verifier):
    return {"same": verifier, "unrelated": tiny_llama(seed=7), "partial": perturbed(verifier, noise=0.05)}


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 8, NEW_TOKENS, max_prompt_len=12)  # prompt lengths 1..8


@pytest.fixture(scope="module")
def eos_cases(verifier, cases):
    """An EOS token that several references contain, and each prompt's reference stopped there."""
    eos = Counter(t for _, ref in cases for t in ref[2:10]).most_common(1)[0][0]
    out = []
    for prompt, _ in cases:
        ref = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                do_sample=False, eos_token_id=eos)[0, prompt.shape[1]:].tolist()
        out.append((prompt, ref))
    return eos, out


def _rounds(result):
    return [(r.drafted, r.accepted, r.emitted, r.stop_reason) for r in result.rounds]


@pytest.mark.parametrize("drafter_kind", ["same", "unrelated", "partial"])
@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_every_row_equals_the_verifier_greedy_output(strategy, drafter_kind, verifier, drafters, cases):
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=5)
    decoder = EntropyBasedSpeculativeDecoder(drafters[drafter_kind], verifier, cfg)
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    for i, (result, (_, reference)) in enumerate(zip(results, cases)):
        assert result.new_tokens == reference, f"row {i}"
        assert sum(r.emitted for r in result.rounds) == NEW_TOKENS
        assert result.batch == {"size": len(cases), "row": i}
    drafted = sum(r.drafted for res in results for r in res.rounds)
    accepted = sum(r.accepted for res in results for r in res.rounds)
    if drafter_kind == "same":
        assert accepted == drafted
    elif drafter_kind == "partial":  # uneven acceptance: rows roll back by different amounts every round
        assert 0.1 < accepted / drafted < 0.95


@pytest.mark.parametrize("size", range(1, 9))
def test_batch_sizes_one_to_eight_with_rows_finishing_at_different_rounds(size, verifier, drafters, eos_cases):
    eos, refs = eos_cases
    refs = refs[:size]
    for strategy in ("adaptive", "fixed"):
        cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=4)
        decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier, cfg)
        results = decoder.generate_batch([p for p, _ in refs], max_new_tokens=NEW_TOKENS, eos_token_id=eos)
        assert [r.new_tokens for r in results] == [ref for _, ref in refs]
        assert [r.finish_reason for r in results] == ["eos" if ref[-1] == eos else "length" for _, ref in refs]
    if size >= 4:
        assert len({len(r.rounds) for r in results}) > 1  # rows left the batch at different rounds


def test_the_same_rounds_as_unbatched_decoding_for_each_row(verifier, drafters, cases):
    """Per-row rule state: every row drafts, stops and is verified exactly as it would be alone (gate on)."""
    cfg = EntropyConfig(strategy="adaptive", theta_abs=1.0, max_draft_len=5, gate=True)
    decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier, cfg)
    batched = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    for prompt, result in zip((p for p, _ in cases), batched):
        alone = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert _rounds(result) == _rounds(alone)
        assert [r.threshold for r in result.rounds] == pytest.approx([r.threshold for r in alone.rounds])
        assert [h for r in result.rounds for h in r.entropies] == pytest.approx(
            [h for r in alone.rounds for h in r.entropies], abs=1e-4)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_a_padded_batch_with_its_attention_mask(padding, verifier, drafters, cases):
    prompts = [p for p, _ in cases[:5]]
    width = max(p.shape[1] for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        cols = slice(width - p.shape[1], width) if padding == "left" else slice(0, p.shape[1])
        ids[i, cols], mask[i, cols] = p[0], 1
    decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier, EntropyConfig(strategy="absolute"))
    results = decoder.generate_batch(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases[:5]]


def test_cache_compaction_every_round_keeps_rows_exact(verifier, drafters, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier,
                                             EntropyConfig(strategy="fixed", max_draft_len=5))
    decoder.generate_batch([cases[0][0]], max_new_tokens=1)  # builds the batched loop
    for cache in (decoder._batch.verifier, decoder._batch.drafter):
        cache.compact_slack = 0
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert decoder._batch.verifier.compactions >= 2 and decoder._batch.drafter.compactions >= 2


def test_rollback_makes_holes_and_crops_what_no_row_uses(verifier):
    cache = BatchCache(verifier, compact_slack=100)
    cache.reset(2)
    cache.feed([[1, 2, 3], [4]], "left")
    cache.feed([[5, 6, 7], [8, 9]], "right")
    assert cache.lengths == [6, 3] and cache.mask.shape == (2, 6)
    cache.rollback([4, 2])  # row 0 keeps one of the three, row 1 none of its two
    assert cache.lengths == [4, 2]
    assert cache.mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert cache.cache.get_seq_length() == 4
    cache.compact()
    assert cache.mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    cache.select([1])
    assert cache.lengths == [2] and cache.cache.layers[0].keys.shape[0] == 1


@pytest.mark.parametrize("temperature,top_p", [(1.0, None), (0.7, 0.9)])
def test_a_rows_sampled_tokens_do_not_depend_on_its_batch_mates(temperature, top_p, verifier, drafters, cases):
    """Each row draws from its own generator: the same seed gives the same tokens alone, in one batch, or in
    another batch (and the rounds match too)."""
    cfg = EntropyConfig(strategy="adaptive", theta_abs=1.0, max_draft_len=5)
    decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier, cfg)
    prompts = [p for p, _ in cases]
    kwargs = dict(max_new_tokens=24, temperature=temperature, top_p=top_p)
    together = decoder.generate_batch(prompts, seed=list(range(8)), **kwargs)
    reordered = decoder.generate_batch(prompts[::-1][:5], seed=list(range(8))[::-1][:5], **kwargs)
    for i, prompt in enumerate(prompts):
        alone = decoder.generate(prompt, seed=i, **kwargs)
        assert together[i].new_tokens == alone.new_tokens
        assert _rounds(together[i]) == _rounds(alone)
    for j, result in enumerate(reordered):
        assert result.new_tokens == together[7 - j].new_tokens
    assert sum(r.accepted for r in together[0].rounds) < sum(r.drafted for r in together[0].rounds)


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7), dict(temperature=1.0, top_p=0.8)])
def test_each_row_of_a_batch_is_iid_from_p(setting):
    """Context-free models: every row's 600 tokens are 600 draws from the verifier's processed p (chi-square
    per row), with rejections exercised."""
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter, verifier = context_free_gpt2(target_logits + torch.randn(12, generator=gen)), context_free_gpt2(target_logits)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="absolute", theta_abs=1.8,
                                                                              max_draft_len=4))
    prompts = [torch.tensor([[0] * n]) for n in (1, 3, 2, 5)]
    results = decoder.generate_batch(prompts, max_new_tokens=600, seed=[3, 4, 5, 6], ignore_eos=True, **setting)
    p = torch.softmax(SamplingParams(**setting).process(target_logits[None]), -1)[0].numpy()
    for result in results:
        assert len(result.new_tokens) == 600
        assert sum(r.accepted for r in result.rounds) < sum(r.drafted for r in result.rounds)
        assert chi2_pvalue(result.new_tokens, p) > 1e-3


def test_batched_autoregressive_equals_the_verifier(verifier, cases):
    decoder = EntropyBasedSpeculativeDecoder.autoregressive(verifier)
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert all(r.drafted == 0 and r.emitted == 1 for res in results for r in res.rounds)


@pytest.mark.parametrize("call,message", [
    (lambda d: d.generate_batch([]), "prompts: must be a non-empty list"),
    (lambda d: d.generate_batch([torch.tensor([[1, 2]]), torch.tensor([1])]), r"prompts\[1\]: must be a \[1, T\]"),
    (lambda d: d.generate_batch([torch.tensor([[1, 99]])]), r"prompts\[0\]: token id out of range"),
    (lambda d: d.generate_batch([torch.tensor([[1]])] * 2, seed=[1]), "seed: 1 seeds for 2 prompts"),
    (lambda d: d.generate_batch(torch.tensor([[1, 2]]), attention_mask=torch.tensor([[1, 0, 1]])),
     "attention_mask: shape"),
    (lambda d: d.generate_batch(torch.tensor([[1, 2, 3]]), attention_mask=torch.tensor([[1, 0, 1]])),
     "attention_mask: row 0 has padding between tokens"),
])
def test_bad_input_is_one_line_naming_the_field(call, message, verifier, drafters):
    decoder = EntropyBasedSpeculativeDecoder(drafters["partial"], verifier)
    with pytest.raises(ValueError, match=message):
        call(decoder)


def test_sliding_window_models_are_refused_in_one_line():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=8)
    model = MistralForCausalLM(cfg).eval()
    decoder = EntropyBasedSpeculativeDecoder.autoregressive(model)
    with pytest.raises(ValueError, match="sliding-window"):
        decoder.generate_batch([torch.tensor([[1, 2]])], max_new_tokens=2)
