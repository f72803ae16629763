"""Chunked drafting (``draft_chunk: m``): a rule that reads statistics reads them once per m drafted tokens and
stops at its first stop inside the chunk. The kept draft is the one the per-token loop keeps (greedy: the same
rounds, round for round), the output is the verifier's, sampled output follows its distribution, and replay
prices the extra drafter steps."""

import math

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.replay.cost import CostModel
from entspec.replay.engine import replay
from entspec.replay.trace import record_trace
from entspec.rules import RULES
from test_sampled_distribution import first_two_follow_the_verifier
from tiny import greedy_cases, perturbed, tiny_llama

NEW_TOKENS = 20
READING_RULES = sorted(name for name, info in RULES.items() if info.reads)


@pytest.fixture(scope="module")
def cases(verifier):
    return greedy_cases(verifier, 4, NEW_TOKENS, max_prompt_len=10)


def rounds(result):
    return [(r.drafted, r.accepted, r.emitted, r.stop_reason) for r in result.rounds]


@pytest.mark.parametrize("chunk", [2, 3, 8])
@pytest.mark.parametrize("strategy", READING_RULES)
def test_chunks_keep_the_per_token_draft(strategy, chunk, verifier, drafter, cases):
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=6)
    per_token = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
    chunked = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg.replace(draft_chunk=chunk))
    for prompt, reference in cases:
        a = per_token.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=7)
        b = chunked.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=7)
        assert b.new_tokens == a.new_tokens
        assert rounds(b) == rounds(a)
        for x, y in zip(b.rounds, a.rounds):  # (a drafter forward over 2 tokens vs 1 differs in the last bits)
            assert x.entropies == pytest.approx(y.entropies, rel=1e-5, abs=1e-6)
        for reads, record in zip(chunked.host_reads, b.rounds):  # one read per chunk, not per token
            assert reads["loop"] == math.ceil(record.drafted / chunk)


def test_greedy_output_is_the_verifiers(verifier, drafter, cases):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="absolute", theta_abs=9.0, max_draft_len=8,
                                                                              draft_chunk=4))
    for prompt, reference in cases:
        result = decoder.generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference
        assert sum(r["loop"] for r in decoder.host_reads) < sum(r.drafted for r in result.rounds)


@pytest.mark.parametrize("strategy", ["absolute", "fixed"])
def test_sampled_tokens_follow_the_verifier_in_chunks(strategy):
    """fixed reads per token only to see a sampled EOS; it is chunked then too."""
    verifier = tiny_llama(vocab=8, sharpness=6.0)
    drafter = perturbed(verifier, noise=0.3)
    verifier.generation_config.eos_token_id = 100  # an EOS that is never drawn: fixed reads per token to see it
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, theta_abs=1.0,
                                                                              max_draft_len=4, draft_chunk=3))
    first_two_follow_the_verifier(decoder, verifier, torch.tensor([[1, 5, 2]]), {"temperature": 1.0})
    assert max(r["loop"] for r in decoder.host_reads) <= 2  # 4 tokens in chunks of 3


def test_replay_reproduces_chunked_rounds_and_prices_the_extra_steps(verifier, drafter, cases):
    cost = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.0)
    cfg = EntropyConfig(strategy="absolute", theta_abs=1.0, max_draft_len=6)
    for prompt, _ in cases:
        trace = record_trace(drafter, verifier, prompt, max_new_tokens=NEW_TOKENS, cap=6)
        engine = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg.replace(draft_chunk=4)).generate(
            prompt, max_new_tokens=NEW_TOKENS)
        plain, chunked = replay(trace, cfg, cost), replay(trace, cfg.replace(draft_chunk=4), cost)
        assert chunked.rounds() == plain.rounds() == [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
        for d, steps in zip(chunked.drafted, chunked.steps):  # to the end of the chunk, at most the limit
            assert d <= steps <= -(-d // 4) * 4
        assert sum(chunked.steps) > sum(chunked.drafted)
        assert chunked.time_s == pytest.approx(plain.time_s + 0.4 * (sum(chunked.steps) - sum(chunked.drafted)))


def test_the_chunk_is_validated_naming_the_field():
    from entspec import ConfigError

    with pytest.raises(ConfigError, match="^draft_chunk"):
        EntropyConfig(draft_chunk=0)
