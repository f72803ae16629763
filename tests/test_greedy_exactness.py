"""Greedy decoding is lossless: entspec's tokens equal the verifier's own `generate(do_sample=False)`.

On every KV-cache path: dynamic, static, and static + torch.compile (a few prompts: the compiled graphs are
the expensive part on a CPU).
"""

import pytest
import torch

from entspec import STOPPING_CRITERIA, EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.entropy import ENTROPY_TYPES
from cache_paths import PATHS, buckets_for, decoder_kwargs
from tiny import greedy_cases, perturbed, tiny_llama

NUM_PROMPTS, NEW_TOKENS = 20, 16
PROMPTS_PER_PATH = {"dynamic": NUM_PROMPTS, "static": NUM_PROMPTS, "compiled": 3}
STRATEGIES = sorted(STOPPING_CRITERIA)


@pytest.fixture(scope="module")
def drafters(verifier):
    return {
        "same": verifier,  # every draft token accepted
        "unrelated": tiny_llama(seed=7),  # almost every draft token rejected
        "partial": perturbed(verifier, noise=0.05),  # about half accepted
    }


@pytest.fixture(scope="module")
def prompts_and_references(verifier):
    return greedy_cases(verifier, NUM_PROMPTS, NEW_TOKENS, max_prompt_len=12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("drafter_kind", ["same", "unrelated", "partial"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_greedy_output_equals_verifier_greedy(strategy, drafter_kind, path, verifier, drafters,
                                              prompts_and_references):
    accepted = drafted = 0
    for i, (prompt, reference) in enumerate(prompts_and_references[:PROMPTS_PER_PATH[path]]):
        entropy_type = ENTROPY_TYPES[i % len(ENTROPY_TYPES)]  # every entropy type on a third of the prompts
        cfg = EntropyConfig(strategy=strategy, entropy_type=entropy_type, theta_abs=1.0, max_draft_len=5)
        with buckets_for(path):
            decoder = EntropyBasedSpeculativeDecoder(drafters[drafter_kind], verifier, cfg, **decoder_kwargs(path))
        result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0.0)
        assert result.new_tokens == reference, f"prompt {i} ({entropy_type})"
        assert sum(r.emitted for r in result.rounds) == NEW_TOKENS
        accepted += sum(r.accepted for r in result.rounds)
        drafted += sum(r.drafted for r in result.rounds)
    rate = accepted / drafted
    if drafter_kind == "same":
        assert rate == 1.0
    elif drafter_kind == "unrelated":
        assert rate < 0.3
    else:
        assert 0.1 < rate < 0.95


@pytest.mark.parametrize("path", PATHS)
def test_autoregressive_baseline_equals_verifier_greedy(path, verifier, prompts_and_references):
    with buckets_for(path):
        decoder = EntropyBasedSpeculativeDecoder.autoregressive(verifier, **decoder_kwargs(path))
    for prompt, reference in prompts_and_references[:PROMPTS_PER_PATH[path]]:
        result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference
        assert all(r.drafted == 0 and r.emitted == 1 for r in result.rounds)
