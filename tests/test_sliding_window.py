"""Sliding-window models (Mistral, Gemma 2, Gemma 3) decode losslessly with contexts longer than their window:
rolling back a rejected draft past the window needs the states the window would have dropped (the caches
record them after the prefill, as transformers' assisted decoding does)."""

import pytest
import torch

from entspec import STOPPING_CRITERIA, EntropyBasedSpeculativeDecoder, EntropyConfig
from test_sampled_distribution import first_two_follow_the_verifier
from tiny import perturbed, tiny_sliding

FAMILIES = ("mistral", "gemma2", "gemma3")
WINDOW, NEW_TOKENS = 8, 24


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    verifier = tiny_sliding(request.param, window=WINDOW)
    return request.param, perturbed(verifier, noise=0.05), verifier


@pytest.mark.parametrize("strategy", sorted(STOPPING_CRITERIA))
def test_greedy_output_equals_the_verifier_past_the_window(strategy, pair):
    family, drafter, verifier = pair
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, theta_abs=1.0,
                                                                              max_draft_len=5))
    gen = torch.Generator().manual_seed(1)
    rejected = 0
    for length in (3, 6, 12):  # prompts shorter and longer than the window; every output runs past it
        prompt = torch.randint(1, 64, (1, length), generator=gen)
        reference = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                      do_sample=False)[0, length:].tolist()
        result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference, f"{family}, prompt length {length}"
        rejected += sum(r.drafted - r.accepted for r in result.rounds)
    assert rejected > 0  # rollbacks past the window happened


@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7)])
def test_sampled_tokens_follow_the_verifier_past_the_window(setting, pair):
    """A 12-token prompt (window 8): the joint of the first two sampled tokens is p(t1) p(t2 | t1)."""
    family, _, _ = pair
    verifier = tiny_sliding(family, vocab=8, window=WINDOW, sharpness=6.0)
    drafter = perturbed(verifier, noise=0.3)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=3))
    first_two_follow_the_verifier(decoder, verifier, torch.tensor([[1, 5, 2, 7, 3, 3, 6, 1, 4, 2, 5, 7]]), setting)
