"""Sampled output follows the verifier's exact distribution (chi-square, scipy.stats), end to end.

Every case runs on the dynamic KV cache; a subset also on the static cache, and (slow: a graph per model shape)
on the static cache with torch.compile.
"""

import itertools

import numpy as np
import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig, SamplingParams
from cache_paths import buckets_for, decoder_kwargs, slow_case
from stats_helpers import chi2_pvalue
from tiny import context_free_gpt2, perturbed, tiny_llama

SETTINGS = {
    "t1.0": dict(temperature=1.0),
    "t0.7": dict(temperature=0.7),
    "topk5": dict(temperature=1.0, top_k=5),
    "topp0.8": dict(temperature=1.0, top_p=0.8),
}
CASES = [(rule, setting, "dynamic") for rule in ("fixed", "absolute", "adaptive") for setting in SETTINGS]
CASES += [("fixed", "t1.0", "static"), ("adaptive", "topp0.8", "static"),
          slow_case("absolute", "t0.7", "compiled")]


@pytest.fixture(scope="module")
def context_free_pair():
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    draft_logits = target_logits + torch.randn(12, generator=gen)
    return context_free_gpt2(draft_logits), context_free_gpt2(target_logits), target_logits


@pytest.mark.parametrize("strategy,setting,path", CASES)
def test_long_generation_from_context_free_models_is_iid_from_p(strategy, setting, path, context_free_pair):
    """Every position has the same p, so 1,200 generated tokens are 1,200 draws from p."""
    drafter, verifier, target_logits = context_free_pair
    kwargs = SETTINGS[setting]
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.8, max_draft_len=4)
    with buckets_for(path):
        decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg, **decoder_kwargs(path))
    result = decoder.generate(
        torch.tensor([[0]]), max_new_tokens=1200, seed=11, ignore_eos=True, **kwargs)
    target_probs = torch.softmax(SamplingParams(**kwargs).process(target_logits[None]), -1)[0]
    rounds = result.rounds
    assert sum(r.accepted for r in rounds) < sum(r.drafted for r in rounds)  # rejections were exercised
    assert chi2_pvalue(result.new_tokens, target_probs.numpy()) > 1e-3


def exact_joint_of_first_two(verifier, prompt, sampling):
    """p(t1, t2) = p(t1 | prompt) p(t2 | prompt, t1), from the verifier's logits."""
    vocab = verifier.config.vocab_size
    with torch.inference_mode():
        p1 = torch.softmax(sampling.process(verifier(prompt).logits[0, -1:]), -1)[0]
        seqs = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = torch.softmax(sampling.process(verifier(seqs).logits[:, -1]), -1)
    return (p1[:, None] * p2).numpy()


def first_two_follow_the_verifier(decoder, verifier, prompt, setting: dict, seeds: int = 600) -> None:
    """Over ``seeds`` seeds, the first two sampled tokens follow p(t1) p(t2 | t1) (chi-square), with rejections."""
    vocab = verifier.config.vocab_size
    pairs, rejected = [], 0
    for seed in range(seeds):
        result = decoder.generate(prompt, max_new_tokens=4, seed=seed, **setting)
        pairs.append(result.new_tokens[0] * vocab + result.new_tokens[1])
        rejected += sum(r.drafted - r.accepted for r in result.rounds)
    assert rejected > 0
    joint = exact_joint_of_first_two(verifier, prompt, SamplingParams(**setting))
    assert chi2_pvalue(pairs, joint) > 1e-3


@pytest.mark.parametrize("strategy,setting,path", [
    ("absolute", "t1.0", "dynamic"), ("adaptive", "t1.0", "dynamic"), ("fixed", "t1.0", "dynamic"),
    ("fixed", "topp0.8", "dynamic"), ("absolute", "t1.0", "static"), slow_case("fixed", "t1.0", "compiled")])
def test_first_two_tokens_follow_the_verifier_joint_distribution(strategy, setting, path):
    """A context-dependent pair: the joint of (t1, t2) over many seeds equals p(t1) p(t2 | t1)."""
    verifier = tiny_llama(seed=0, vocab=8, sharpness=6.0)
    drafter = perturbed(verifier, noise=0.3)
    prompt = torch.tensor([[1, 5, 2]])
    kwargs = SETTINGS[setting]
    with buckets_for(path):
        decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, theta_abs=1.0,
                                                                                  max_draft_len=3),
                                                 **decoder_kwargs(path))
    pairs = []
    for seed in range(700):
        tokens = decoder.generate(prompt, max_new_tokens=3, seed=seed, **kwargs).new_tokens
        pairs.append(tokens[0] * 8 + tokens[1])
    joint = exact_joint_of_first_two(verifier, prompt, SamplingParams(**kwargs))
    assert chi2_pvalue(np.array(pairs), joint.ravel()) > 1e-3


@pytest.mark.parametrize("setting,path", [("t1.0", "dynamic"), ("t0.7", "dynamic"), ("t1.0", "static")])
def test_rounds_without_drafting_keep_the_distribution(setting, path):
    """Issue 15: with a poor drafter the gate skips drafting in most rounds; tokens still follow p exactly."""
    gen = torch.Generator().manual_seed(5)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter = context_free_gpt2(-target_logits)  # proposes what the verifier likes least
    verifier = context_free_gpt2(target_logits)
    kwargs = SETTINGS[setting]
    result = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                              gate=True), **decoder_kwargs(path)
                                            ).generate(torch.tensor([[0]]), max_new_tokens=1200, seed=7,
                                                       ignore_eos=True, **kwargs)
    reasons = [r.stop_reason for r in result.rounds]
    assert reasons.count("gate") > len(reasons) / 2 and reasons.count("probe") > 3
    target_probs = torch.softmax(SamplingParams(**kwargs).process(target_logits[None]), -1)[0]
    assert chi2_pvalue(result.new_tokens, target_probs.numpy()) > 1e-3
