"""The drafter's context window (``drafter_context: N``): the drafter reads only the last N to 2N committed
tokens, and the output is still exactly the verifier's (greedy, every rule, single and batched) and follows its
distribution (sampling), with windows shorter than the prompt and rebuilt during the generation."""

import pytest
import torch

from entspec import STOPPING_CRITERIA, ConfigError, EntropyBasedSpeculativeDecoder, EntropyConfig
from test_sampled_distribution import first_two_follow_the_verifier
from tiny import greedy_cases, perturbed, tiny_llama

NEW_TOKENS = 20


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 6, NEW_TOKENS, max_prompt_len=12)


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_greedy_output_is_the_verifiers_whatever_the_window(strategy, window, verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, theta_abs=1.0,
                                                                              max_draft_len=5, drafter_context=window))
    for prompt, reference in cases:
        assert decoder.generate(prompt, max_new_tokens=NEW_TOKENS).new_tokens == reference
        assert len(decoder.drafter.lm) < 2 * window + 6  # the window (and one round's draft) only


@pytest.mark.parametrize("window", [2, 5])
def test_batched_rows_are_the_verifiers_whatever_the_window(window, verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="adaptive", theta_abs=1.0,
                                                                              max_draft_len=5, drafter_context=window))
    results = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in results] == [ref for _, ref in cases]
    assert sum(r.drafted for res in results for r in res.rounds) > 0


def test_the_prefill_reads_only_the_window_and_the_window_is_rebuilt(verifier, drafter):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=3,
                                                                              drafter_context=4))
    prompt = torch.randint(1, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    decoder.drafter.start(prompt)
    assert decoder.drafter.window_start == 6 and len(decoder.drafter.lm) == 4
    result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert decoder.drafter.window_start > 10  # rebuilt on the last 4 tokens at least once
    assert len(result.new_tokens) == NEW_TOKENS


def test_a_window_changes_the_drafts_not_the_output(verifier, drafter, cases):
    """A drafter that reads less proposes other tokens (the window is real), and the output is the same."""
    prompt, reference = max(cases, key=lambda c: c[0].shape[1])
    full = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4))
    short = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                            drafter_context=1))
    a, b = full.generate(prompt, max_new_tokens=NEW_TOKENS), short.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert a.new_tokens == b.new_tokens == reference
    assert [r.accepted for r in a.rounds] != [r.accepted for r in b.rounds]


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7)])
def test_sampled_tokens_follow_the_verifier_with_a_short_window(setting):
    """A 12-token prompt read through a 3-token window: the joint of the first two sampled tokens is
    p(t1) p(t2 | t1)."""
    verifier = tiny_llama(vocab=8, sharpness=6.0)
    drafter = perturbed(verifier, noise=0.3)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=3,
                                                                              drafter_context=3))
    first_two_follow_the_verifier(decoder, verifier, torch.tensor([[1, 5, 2, 7, 3, 3, 6, 1, 4, 2, 5, 7]]), setting)


def test_the_window_is_validated_naming_the_field():
    with pytest.raises(ConfigError, match="^drafter_context"):
        EntropyConfig(drafter_context=0)
