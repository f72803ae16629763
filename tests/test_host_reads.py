"""The draft loop's device -> host reads: at most one per drafted token for rules that read, none for the rest.

Every way Python can pull a value out of a tensor (``item``, ``tolist``, ``float()``, ``int()``, ``bool()``, use
as an index, ``numpy``, ``cpu``) is wrapped and counted during a decode; the decoder's public per-round counters
(`host_reads`: the draft loop's reads and the verification step's one read, which also takes the drafter's
once-per-round statistics) must account for
every one of them.
"""

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.rules import RULES
from tiny import perturbed, tiny_llama

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu")


def reads_per_round(monkeypatch, decoder, **generate_kwargs):
    """Generate; return ``(result, decoder.host_reads, reads outside the rounds)``, having checked that the
    decoder's public per-round counters account for every read Python made during the generation."""
    count = [0]
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    result = decoder.generate(torch.tensor([[3, 1, 4, 1, 5]]), max_new_tokens=40, **generate_kwargs)
    monkeypatch.undo()
    rounds = decoder.host_reads
    outside = count[0] - sum(sum(r.values()) for r in rounds)
    assert outside == 2  # the input's token-id range check (max and min), once per generation
    return result, rounds, outside


ENTROPY_RULES = [name for name, info in RULES.items() if info.reads]
SILENT_RULES = [name for name, info in RULES.items() if not info.reads]  # fixed, heuristic


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("strategy", ENTROPY_RULES)
def test_rules_that_read_cost_at_most_one_read_per_drafted_token(monkeypatch, verifier, drafter, strategy,
                                                                 temperature, kv_cache):
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=6, entropy_type="renyi")
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg, kv_cache=kv_cache)
    result, rounds, outside = reads_per_round(monkeypatch, decoder, temperature=temperature, seed=2,
                                              eos_token_id=7)
    assert len(rounds) == len(result.rounds) > 3
    for r, record in zip(rounds, result.rounds):
        assert r["loop"] <= record.drafted  # one small stacked read per drafted token
        assert r["verify"] <= 1  # accepted count, next token, accept probs and the NaN check together
    assert sum(r["loop"] for r in rounds) == sum(r.drafted for r in result.rounds)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("strategy", SILENT_RULES)
def test_rules_that_read_nothing_draft_without_reading(monkeypatch, verifier, drafter, strategy, temperature,
                                                       kv_cache):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, max_draft_len=6),
                                             kv_cache=kv_cache)
    # Greedy drafts are cut at EOS after the loop; a sampled draft has to see EOS as it is drawn, so no EOS there.
    result, rounds, _ = reads_per_round(monkeypatch, decoder, temperature=temperature, seed=2,
                                        eos_token_id=7 if temperature == 0 else None, ignore_eos=temperature > 0)
    assert sum(r.drafted for r in result.rounds) > 20
    assert all(r["loop"] == 0 for r in rounds)
    assert all(r == {"loop": 0, "verify": 1} for r in rounds)  # one read per round in all


def test_without_trace_statistics_an_entropy_rule_reads_in_the_loop_and_the_verdict(monkeypatch, verifier, drafter):
    cfg = EntropyConfig(strategy="absolute", theta_abs=1.0, record_all_entropies=False)
    result, rounds, _ = reads_per_round(monkeypatch, EntropyBasedSpeculativeDecoder(drafter, verifier, cfg),
                                        temperature=0.0)
    assert all(r["verify"] == 1 for r in rounds)
    assert sum(r["loop"] for r in rounds) == sum(r.drafted for r in result.rounds)
    assert all(r.entropies_by_type == {} for r in result.rounds)


def test_a_greedy_fixed_draft_is_cut_at_its_first_eos(verifier):
    prompt = torch.tensor([[5, 6, 7]])
    ref = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    eos = ref[0, prompt.shape[1] + 2].item()
    cfg = EntropyConfig(strategy="fixed", max_draft_len=8)
    result = EntropyBasedSpeculativeDecoder(verifier, verifier, cfg).generate(prompt, max_new_tokens=12,
                                                                            eos_token_id=eos)
    first = result.rounds[0]
    assert (first.drafted, first.accepted, first.stop_reason) == (3, 3, "eos")
    assert len(first.entropies) == len(first.draft_token_probs) == 3
    assert result.new_tokens[-1] == eos and result.finish_reason == "eos"
