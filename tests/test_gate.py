"""Speculation that never costs speed: the gate drafts nothing while drafting does not pay (issue 15)."""

import pytest
import torch

from entspec import ConfigError, EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.gate import SpeculationGate
from entspec.replay.cost import CostModel
from entspec.replay.engine import replay
from entspec.replay.trace import record_trace
from entspec.engine.stopping import RULES
from tiny import tiny_llama

NEW_TOKENS = 64


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return tiny_llama(seed=0), tiny_llama(seed=7)  # verifier, an unrelated drafter


def greedy_reference(verifier, prompt, n):
    out = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False)
    return out[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_unrelated_drafter_drafts_almost_nothing_and_output_is_exact(name, kv_cache, models):
    """With the gate on, every registered rule at its default settings (gated rounds: catch-up forwards)."""
    verifier, unrelated = models
    prompt = torch.tensor([[3, 14, 15, 9, 2, 6]])
    result = EntropyBasedSpeculativeDecoder(unrelated, verifier, EntropyConfig(strategy=name, gate=True),
                                            kv_cache=kv_cache).generate(prompt, max_new_tokens=NEW_TOKENS)
    assert result.new_tokens == greedy_reference(verifier, prompt, NEW_TOKENS)
    later = result.rounds[8:]  # once it has seen a few rounds
    assert sum(r.drafted for r in later) / len(later) <= 0.25, [r.drafted for r in result.rounds]
    assert any(r.stop_reason == "gate" for r in result.rounds)


def test_a_drafter_that_pays_is_never_gated(models):
    verifier, _ = models
    prompt = torch.tensor([[3, 14, 15, 9, 2, 6]])
    result = EntropyBasedSpeculativeDecoder(verifier, verifier, EntropyConfig(strategy="fixed", gate=True)).generate(
        prompt, max_new_tokens=NEW_TOKENS)
    assert all(r.stop_reason != "gate" and r.drafted > 0 for r in result.rounds[:-1])


def test_gate_is_off_by_default_and_then_drafts_every_round(models):
    assert EntropyConfig().gate is False
    verifier, unrelated = models
    prompt = torch.tensor([[3, 14, 15, 9, 2, 6]])
    result = EntropyBasedSpeculativeDecoder(unrelated, verifier, EntropyConfig()).generate(
        prompt, max_new_tokens=24)
    assert all(r.drafted >= 1 for r in result.rounds[:-1])


def test_gate_backs_off_and_one_paying_probe_reopens_it():
    gate = SpeculationGate(EntropyConfig(cost_ratio=0.5, verify_slope=0.0, gate=True))
    gate.update(drafted=4, accepted=0)  # 1 token for 3 units of cost: below plain decoding, the gate closes
    assert not gate.open
    decisions = []
    for _ in range(16):
        decisions.append(gate.draft_limit(8))
        gate.update(decisions[-1], 0)  # every probe is rejected
    # the first probe (after 1 skipped round) drafts what the rule asks, later ones one token, after 2, 4, 8 rounds
    assert decisions == [0, 8, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    while gate.draft_limit(8) == 0:
        pass
    gate.update(drafted=1, accepted=1)  # one probe that pays (2 tokens for 1.5 units): open again at once
    assert gate.open and gate.draft_limit(8) == 8 and gate.backoff == 1
    assert gate.rate == pytest.approx((2 + 2) / (1.5 + 1.5))  # fresh sums: the prior and the probe, no old history


def test_gate_backoff_is_capped():
    from entspec.engine.gate import MAX_BACKOFF

    gate = SpeculationGate(EntropyConfig(cost_ratio=0.5, verify_slope=0.0, gate=True))
    gate.update(drafted=4, accepted=0)
    decisions = []
    for _ in range(200):
        decisions.append(gate.draft_limit(8))
        gate.update(decisions[-1], 0)
    probes = [i for i, d in enumerate(decisions) if d]
    assert max(b - a for a, b in zip(probes, probes[1:])) == MAX_BACKOFF + 1


@pytest.mark.parametrize("name", ["absolute", "fixed", "goodput", "adaptive"])
def test_replay_reproduces_gated_rounds(name, models):
    verifier, unrelated = models
    cost = CostModel(draft_step_s=0.4, verify_tokens=[1, 9], verify_s=[1.0, 1.2], overhead_round_s=0.0)
    for seed in range(3):
        prompt = torch.randint(1, 64, (1, 4 + seed), generator=torch.Generator().manual_seed(seed))
        cfg = EntropyConfig(strategy=name, gate=True)
        trace = record_trace(unrelated, verifier, prompt, max_new_tokens=40, cap=cfg.max_draft_len)
        engine = EntropyBasedSpeculativeDecoder(unrelated, verifier, cfg).generate(prompt, max_new_tokens=40)
        replayed = replay(trace, cfg, cost)
        assert replayed.rounds() == [(r.drafted, r.accepted, r.emitted) for r in engine.rounds]
        assert replayed.stop_reasons == [r.stop_reason for r in engine.rounds]


def test_gate_reads_the_measured_verify_curve():
    """With the CPU's measured curve (a 2-token call cheaper than a 1-token one) a one-token draft accepted 40% of
    the time pays (1.4 tokens for 0.89 + 0.4 = 1.29 units), so the gate stays open where the linear model
    (1 + 0.02 + 0.4 = 1.42 units) closes it."""
    from entspec.engine.gate import SpeculationGate
    from entspec.engine.round_cost import RoundCost

    curve = [[1, 1.0], [2, 0.89], [3, 0.93], [5, 1.02], [9, 1.19], [17, 1.53]]
    measured = EntropyConfig(gate=True, cost_ratio=0.4, verify_curve=curve, max_draft_len=1)
    linear = EntropyConfig(gate=True, cost_ratio=0.4, max_draft_len=1)
    assert RoundCost.of(measured).verify(4) == pytest.approx((0.93 + 1.02) / 2)
    assert RoundCost.of(linear).verify(4) == pytest.approx(1.06)
    assert RoundCost.of(measured)(3) == pytest.approx(RoundCost.of(measured).verify(4) + 3 * 0.4)
    assert RoundCost.of(linear).marginal(2) == pytest.approx(0.4 + 0.02)
    gates = {name: SpeculationGate(cfg) for name, cfg in (("measured", measured), ("linear", linear))}
    for gate in gates.values():
        for i in range(40):  # one drafted token per round, accepted 2 rounds in 5
            gate.update(1, int(i % 5 in (0, 2)))
    assert gates["measured"].draft_limit(1) == 1 and gates["linear"].draft_limit(1) == 0
    with pytest.raises(ConfigError, match="^verify_curve:"):
        EntropyConfig(verify_curve=[[2, 1.0], [1, 0.9]])
