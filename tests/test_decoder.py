"""The decode loop: cache rollback, EOS and budget edges, bad input, determinism, the trace."""

import pytest
import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from tiny import perturbed, tiny_llama


def reference(verifier, prompt, n, eos=None):
    out = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                            eos_token_id=eos)
    return out[0, prompt.shape[1]:].tolist()


def fresh_next_logits(model, sequence):
    with torch.inference_mode():
        return model(sequence).logits[0, -1]


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_after_every_round_both_caches_hold_exactly_the_accepted_prefix(verifier, drafter, temperature, gated,
                                                                        kv_cache):
    # rejects often; with the gate on, an unrelated drafter: rounds without drafting, then catch-up forwards
    drafter = tiny_llama(seed=7) if gated else perturbed(verifier, noise=0.15)
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=4,
                                                                              gate=gated), kv_cache=kv_cache)
    prompt = torch.tensor([[3, 14, 15, 9, 2, 6]])
    checked = {"rejections": 0, "gated": 0, "resumed": 0, "last": None}
    original_round = decoder._round

    def checked_round(sequence, *args):
        emitted, record = original_round(sequence, *args)
        committed = torch.cat([sequence, torch.tensor([emitted])], dim=1)
        checked["rejections"] += record.accepted < record.drafted
        checked["gated"] += record.stop_reason == "gate"
        checked["resumed"] += checked["last"] == "gate" and record.drafted > 0  # a catch-up forward ran
        checked["last"] = record.stop_reason
        for lm in (decoder.verifier, decoder.drafter.lm):
            # the cache holds a prefix of the committed tokens, never a rejected draft position ...
            assert len(lm) <= committed.shape[1] - 1
            # ... and continuing from it gives the same logits as a fresh forward over the same tokens
            before = len(lm)
            cached = lm.forward(committed[:, before:])[-1]
            assert torch.allclose(cached, fresh_next_logits(lm.model, committed), atol=1e-4)
            lm.crop(before)
        assert len(decoder.verifier) == committed.shape[1] - 1  # the verifier keeps every accepted token
        return emitted, record

    decoder._round = checked_round
    decoder.generate(prompt, max_new_tokens=40, temperature=temperature, seed=3)
    assert checked["rejections"] > 3
    if gated:
        assert checked["gated"] > 10 and checked["resumed"] >= 2


def test_eos_inside_a_draft_ends_the_output_there(verifier):
    prompt = torch.tensor([[5, 6, 7]])
    free_run = reference(verifier, prompt, 12)
    eos = free_run[5]
    expected = reference(verifier, prompt, 12, eos=eos)
    assert expected[-1] == eos and len(expected) <= 6
    cfg = EntropyConfig(strategy="fixed", max_draft_len=8)  # drafter = verifier drafts through the EOS
    result = EntropyBasedSpeculativeDecoder(verifier, verifier, cfg).generate(prompt, max_new_tokens=12,
                                                                            eos_token_id=eos)
    assert result.new_tokens == expected
    assert result.finish_reason == "eos"
    assert result.rounds[-1].stop_reason == "eos"


def test_eos_from_generation_config_and_ignore_eos(verifier):
    prompt = torch.tensor([[5, 6, 7]])
    eos = reference(verifier, prompt, 12)[3]
    verifier.generation_config.eos_token_id = eos
    try:
        dec = EntropyBasedSpeculativeDecoder(verifier, verifier, EntropyConfig(strategy="fixed"))
        assert dec.generate(prompt, max_new_tokens=12).new_tokens[-1] == eos
        assert len(dec.generate(prompt, max_new_tokens=12, ignore_eos=True).new_tokens) == 12
    finally:
        verifier.generation_config.eos_token_id = None


def test_budget_reached_mid_draft(verifier):
    prompt = torch.tensor([[1, 2, 3]])
    cfg = EntropyConfig(strategy="fixed", max_draft_len=8)
    result = EntropyBasedSpeculativeDecoder(verifier, verifier, cfg).generate(prompt, max_new_tokens=5)
    assert result.new_tokens == reference(verifier, prompt, 5)
    assert result.rounds[0].drafted == 4 and result.rounds[0].stop_reason == "max_new_tokens"
    assert result.finish_reason == "length"


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_new_tokens(verifier, drafter, n):
    prompt = torch.tensor([[4, 8]])
    result = EntropyBasedSpeculativeDecoder(drafter, verifier).generate(prompt, max_new_tokens=n)
    assert result.new_tokens == reference(verifier, prompt, 1)[:n]
    assert len(result.rounds) == n


def test_one_token_prompt(verifier, drafter):
    prompt = torch.tensor([[9]])
    result = EntropyBasedSpeculativeDecoder(drafter, verifier).generate(prompt, max_new_tokens=10)
    assert result.new_tokens == reference(verifier, prompt, 10)


def test_bad_input_gets_clear_errors(verifier, drafter):
    dec = EntropyBasedSpeculativeDecoder(drafter, verifier)
    with pytest.raises(ValueError, match="empty"):
        dec.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size must be 1"):
        dec.generate(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        dec.generate(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        dec.generate(torch.tensor([[1, 10_000]]))
    with pytest.raises(ValueError, match="vocab size mismatch"):
        EntropyBasedSpeculativeDecoder(tiny_llama(seed=1, vocab=80), verifier)


def test_nan_logits_get_a_clear_error(verifier):
    broken = perturbed(verifier, noise=0.0)
    with torch.no_grad():
        broken.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        EntropyBasedSpeculativeDecoder(broken, verifier).generate(torch.tensor([[1, 2]]), max_new_tokens=4)


def test_same_seed_same_tokens_and_seeds_differ(verifier, drafter):
    dec = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="adaptive"))
    runs = [dec.generate(torch.tensor([[1, 2]]), max_new_tokens=20, temperature=1.0, seed=s).new_tokens
            for s in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]


def test_trace_has_one_entry_per_drafted_token(verifier, drafter):
    cfg = EntropyConfig(strategy="absolute", theta_abs=0.8, max_draft_len=6)
    result = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(
        torch.tensor([[1, 2, 3]]), max_new_tokens=30, temperature=0.7, top_p=0.9, seed=1)
    assert sum(r.emitted for r in result.rounds) == len(result.new_tokens) == 30
    reasons = {r.stop_reason for r in result.rounds}
    assert "criterion" in reasons
    for r in result.rounds:
        assert len(r.entropies) == len(r.draft_token_probs) == len(r.accept_probs) == r.drafted
        assert all(len(v) == r.drafted for v in r.entropies_by_type.values())
        assert 0 <= r.accepted <= r.drafted and r.emitted == r.accepted + 1
        assert r.round_time_s >= r.draft_time_s + r.verify_time_s
        if r.stop_reason == "criterion":
            assert r.entropies[-1] > 0.8 and all(h <= 0.8 for h in r.entropies[:-1])
    assert result.time_to_first_token_s <= result.wall_time_s


def test_autoregressive_is_the_one_loop_with_a_null_drafter(verifier):
    """Issue 11: no drafter-is-None branches; the null drafter drafts nothing, reads nothing, records as before."""
    from entspec.engine.drafter import NullDrafter

    prompt = torch.tensor([[3, 1, 4]])
    decoder = EntropyBasedSpeculativeDecoder.autoregressive(verifier)
    assert isinstance(decoder.drafter, NullDrafter) and decoder.method == "autoregressive"
    result = decoder.generate(prompt, max_new_tokens=8)
    assert result.new_tokens == reference(verifier, prompt, 8) and result.method == "autoregressive"
    for r in result.rounds:
        assert (r.drafted, r.accepted, r.emitted, r.stop_reason, r.threshold) == (0, 0, 1, "none", None)
        assert r.entropies == r.draft_token_probs == r.accept_probs == [] and r.entropies_by_type == {}
        assert r.draft_time_s == 0.0


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_a_decoder_reused_across_prompts_gives_what_fresh_ones_give(verifier, drafter, kv_cache):
    """An experiment builds each method's decoder once and reuses it for every unit (MethodSpec.decoder): every
    generation must equal a fresh decoder's, greedy and sampled, speculative and autoregressive."""
    from entspec.experiment.methods import MethodSpec

    settings = {"max_new_tokens": 12, "temperature": 0.0, "top_k": None, "top_p": None, "ignore_eos": True,
                "kv_cache": kv_cache, "compile": False, "max_sequence_length": 40}
    prompts = [torch.tensor([[3, 1, 4, 1, 5]]), torch.tensor([[9, 2, 6, 5, 3, 5, 8, 9]]), torch.tensor([[7]])]
    for spec in (MethodSpec("entspec", {"strategy": "absolute", "theta_abs": 1.0}), MethodSpec("autoregressive")):
        for temperature in (0.0, 0.8):
            for p in prompts:
                run = {**settings, "temperature": temperature}
                reused = spec.run(drafter, verifier, p, run, seed=5).new_tokens
                fresh = MethodSpec(spec.kind, dict(spec.params)).run(drafter, verifier, p, run, seed=5).new_tokens
                assert reused == fresh
        assert len(spec._decoders) == 1  # built once
