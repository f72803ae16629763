"""The acceptance step itself, with many vectorized draws: the output follows the target distribution."""

import pytest
import torch

from entspec.engine.sampling import SamplingParams, greedy_accept, speculative_accept
from stats_helpers import chi2_pvalue

SETTINGS = [SamplingParams(1.0), SamplingParams(0.7), SamplingParams(1.0, top_k=4), SamplingParams(1.0, top_p=0.8),
            SamplingParams(0.7, top_k=5, top_p=0.9)]


@pytest.mark.parametrize("sampling", SETTINGS, ids=str)
def test_each_emitted_position_follows_the_target_distribution(sampling):
    torch.manual_seed(3)  # fixed seeds; p-values over many seeds were checked to be uniform
    vocab, n, draws = 10, 3, 200_000
    target_logits = torch.randn(n + 1, vocab) * 1.5
    draft_logits = target_logits[:n] + torch.randn(n, vocab)  # a partly agreeing drafter
    target_probs = torch.softmax(sampling.process(target_logits), -1)
    draft_probs = torch.softmax(sampling.process(draft_logits), -1)
    gen = torch.Generator().manual_seed(4)
    draft_tokens = torch.multinomial(draft_probs, draws, replacement=True, generator=gen).T  # [B, n]
    accepted, next_token, ratios = speculative_accept(
        draft_tokens, draft_probs.expand(draws, -1, -1), target_probs.expand(draws, -1, -1), gen)
    assert ratios.shape == (draws, n) and bool((ratios <= 1).all())
    # The token at position i is the draft token if accepted there, else the corrected one; it exists for
    # draws that accepted at least i earlier tokens, and given that, must be distributed as p_i.
    emitted = torch.cat([draft_tokens, torch.zeros(draws, 1, dtype=torch.long)], dim=1)
    emitted[torch.arange(draws), accepted] = next_token
    for i in range(n + 1):
        reached = accepted >= i
        assert int(reached.sum()) > 5_000
        assert chi2_pvalue(emitted[reached, i].numpy(), target_probs[i].numpy()) > 1e-3


def test_identical_distributions_accept_everything():
    probs = torch.softmax(torch.randn(3, 6), -1)
    tokens = torch.multinomial(probs, 1).T
    accepted, _, ratios = speculative_accept(tokens, probs[None], torch.cat([probs, probs[:1]])[None])
    assert int(accepted) == 3 and bool((ratios == 1).all())


def test_empty_draft_samples_from_the_target():
    target = torch.softmax(torch.randn(1, 1, 5), -1).expand(50_000, -1, -1)
    gen = torch.Generator().manual_seed(0)
    accepted, token, _ = speculative_accept(torch.zeros(50_000, 0, dtype=torch.long), torch.zeros(50_000, 0, 5),
                                            target, gen)
    assert int(accepted.max()) == 0
    assert chi2_pvalue(token.numpy(), target[0, 0].numpy()) > 1e-3


def test_greedy_accepts_the_matching_prefix_then_emits_the_argmax():
    target_logits = torch.full((4, 5), -1.0)
    target_logits[torch.arange(4), torch.tensor([2, 3, 1, 4])] = 1.0
    assert greedy_accept(torch.tensor([2, 3, 0]), target_logits) == (2, 1, [1.0, 1.0, 0.0])
    assert greedy_accept(torch.tensor([2, 3, 1]), target_logits) == (3, 4, [1.0, 1.0, 1.0])
    assert greedy_accept(torch.tensor([0, 3, 1]), target_logits)[:2] == (0, 2)


def test_bad_sampling_parameters_are_rejected():
    for kwargs in ({"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingParams(**kwargs)
