"""Sampling on the real default pair (Qwen2.5-Coder 0.5B -> 1.5B, bf16, CPU) keeps the verifier's distribution.

The first emitted token of a round that drafted one token is either the drafted token, accepted with
probability min(1, p/q), or a draw from the residual norm(max(0, p - q)); over many seeds its frequencies must
match the verifier's own next-token distribution p (temperature 1.0, top-p 0.95), computed exactly from one
forward. A raw prompt with a spread answer keeps both the draws cheap and the test sensitive.
"""

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig, SamplingParams
from entspec.models import DEFAULT_PAIR, load_model_pair
from stats_helpers import chi2_pvalue

pytestmark = pytest.mark.slow

DRAWS = 240


@pytest.fixture(scope="module")
def pair():
    return load_model_pair(*DEFAULT_PAIR, dtype="bfloat16", device="cpu", progress=False)


def test_first_sampled_token_follows_the_verifier_distribution(pair):
    torch.set_num_threads(2)
    prompt = pair.tokenizer("Pick a random number between 1 and 9. My number is", return_tensors="pt").input_ids
    sampling = SamplingParams(temperature=1.0, top_p=0.95)
    decoder = EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier,
                                             EntropyConfig(strategy="fixed", max_draft_len=1))
    first, drafted, accepted = [], 0, 0
    for seed in range(DRAWS):
        result = decoder.generate(prompt, max_new_tokens=2, seed=seed, temperature=1.0, top_p=0.95,
                                  ignore_eos=True)
        first.append(result.new_tokens[0])
        drafted += result.rounds[0].drafted
        accepted += result.rounds[0].accepted
    with torch.inference_mode():
        p = torch.softmax(sampling.process(pair.verifier(prompt).logits[0, -1:].float()), -1)[0]
    assert drafted == DRAWS and 0 < accepted < drafted  # both the acceptance and the residual draw were exercised
    assert (p > 0.05).sum() >= 2  # a spread distribution: the test has power
    assert chi2_pvalue(first, p.numpy()) > 1e-3
