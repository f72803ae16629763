"""Traces of a dynamically quantized drafter read its distributions as the engine's one-token steps produce them.

Dynamic int8 quantization takes one activation scale per forward, over all its tokens, so a drafter teacher-forced
over a whole output in one forward has other distributions than the engine's drafter fed one token at a time (on
the real int8 pair at T 1.0 the traces' acceptance β was 0.43 where the engine's steps give 0.53). The traces feed
such a drafter one token per forward (`entspec.replay.trace.teacher_forced`).
"""

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder
from entspec.engine.kv import CachedModel
from entspec.engine.sampling import SamplingParams
from entspec.models.quantize import quantize_drafter, scales_per_call
from entspec.replay.sampled import record_sampled_trace
from entspec.replay.trace import record_trace
from tiny import perturbed, tiny_llama

PROMPT = [3, 17, 5, 40, 22, 9, 31, 11]
NEW_TOKENS = 24
SAMPLING = SamplingParams(temperature=1.0, top_p=0.95)


@pytest.fixture(scope="module")
def pair():
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0, layers=1)
    return quantize_drafter(perturbed(verifier, noise=0.1), "int8-dynamic"), verifier


@torch.inference_mode()
def stepwise_logits(drafter, ids: list[int], n_prompt: int) -> torch.Tensor:
    """The drafter's logits predicting ids[n_prompt:], fed as the engine feeds it: the prompt, then one token per
    forward, the last position's logits only (the head is quantized too)."""
    kv = CachedModel(drafter)
    kv.reset()
    seq = torch.tensor([ids])
    rows = [kv.forward(seq[:, :n_prompt])[-1]]
    rows += [kv.forward(seq[:, i:i + 1])[-1] for i in range(n_prompt, len(ids) - 1)]
    return torch.stack(rows).float()


def test_one_forward_and_one_token_steps_differ_for_a_dynamic_int8_drafter(pair):
    """The premise: without it the tests below could not fail."""
    drafter, verifier = pair
    assert scales_per_call(drafter) and not scales_per_call(verifier)
    ids = PROMPT + list(range(20, 20 + NEW_TOKENS))
    with torch.inference_mode():
        one = drafter(input_ids=torch.tensor([ids])).logits[0, len(PROMPT) - 1:-1].float()
    assert (one - stepwise_logits(drafter, ids, len(PROMPT))).abs().max() > 1e-3


def test_a_sampling_trace_has_the_engines_beta(pair):
    drafter, verifier = pair
    out = EntropyBasedSpeculativeDecoder.autoregressive(verifier).generate(
        torch.tensor([PROMPT]), NEW_TOKENS, SAMPLING.temperature, top_p=SAMPLING.top_p, seed=3).new_tokens
    trace = record_sampled_trace(drafter, verifier, torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS,
                                 sampling=SAMPLING, cap=4, output=out)
    ids = PROMPT + out
    with torch.inference_mode():
        p = torch.softmax(SAMPLING.process(verifier(torch.tensor([ids])).logits[0, len(PROMPT) - 1:-1].float()), -1)
    q = torch.softmax(SAMPLING.process(stepwise_logits(drafter, ids, len(PROMPT))), -1)
    expected = torch.minimum(p.double(), q.double()).sum(-1)
    assert torch.allclose(torch.as_tensor(trace.beta), expected, atol=1e-5)


def test_a_greedy_trace_has_the_engines_draft_tokens(pair):
    drafter, verifier = pair
    trace = record_trace(drafter, verifier, torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, cap=4)
    ids = PROMPT + trace.output.tolist()
    logits = stepwise_logits(drafter, ids, len(PROMPT))
    assert trace.draft_token.tolist() == logits.argmax(-1).tolist()
    assert torch.allclose(torch.as_tensor(trace.token_prob), torch.softmax(logits, -1).max(-1).values, atol=1e-5)
