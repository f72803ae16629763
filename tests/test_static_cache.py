"""The static KV cache and the compiled step (issue 10): same tokens as the dynamic cache, rollback by moving the
write position, stale entries and bucket padding that change nothing, one compiled graph reused across calls."""

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from cache_paths import FAST_BUCKET, buckets_for, decoder_kwargs
from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.kv import CachedModel
from entspec.engine.static_kv import StaticCachedModel, capacity_for
from tiny import context_free_gpt2, greedy_cases, perturbed, tiny_llama


def run(drafter, verifier, path, prompt, cfg=None, **generate):
    with buckets_for(path):
        decoder = (EntropyBasedSpeculativeDecoder.autoregressive(verifier, **decoder_kwargs(path)) if drafter is None
                   else EntropyBasedSpeculativeDecoder(drafter, verifier, cfg, **decoder_kwargs(path)))
    return decoder.generate(prompt, **generate)


def rounds(result):
    return [(r.drafted, r.accepted, r.emitted, r.stop_reason) for r in result.rounds]


# ------------------------------------------------------------------------------- fp32: static == dynamic
@pytest.mark.parametrize("strategy", ["absolute", "adaptive", "fixed"])
def test_static_cache_is_token_exact_to_the_dynamic_cache(strategy, verifier, drafter):
    """Greedy and sampled, every round alike (fp32): the cache kind changes nothing the decoder sees."""
    cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=5)
    gen = torch.Generator().manual_seed(1)
    for i in range(4):
        prompt = torch.randint(1, 64, (1, 3 + 4 * i), generator=gen)
        for kwargs in (dict(temperature=0.0), dict(temperature=1.0, seed=i), dict(temperature=0.7, top_p=0.9, seed=i)):
            dynamic = run(drafter, verifier, "dynamic", prompt, cfg, max_new_tokens=24, **kwargs)
            static = run(drafter, verifier, "static", prompt, cfg, max_new_tokens=24, **kwargs)
            assert static.new_tokens == dynamic.new_tokens and rounds(static) == rounds(dynamic), (i, kwargs)
    prompt = torch.tensor([[5, 6, 7]])
    assert (run(None, verifier, "static", prompt, max_new_tokens=20).new_tokens
            == run(None, verifier, "dynamic", prompt, max_new_tokens=20).new_tokens)


def test_a_model_with_learned_positions_too():
    """GPT-2 (absolute position embeddings) on the static cache: same sampled tokens as on the dynamic one."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(12, generator=gen)
    pair = context_free_gpt2(target + torch.randn(12, generator=gen)), context_free_gpt2(target)
    out = [run(*pair, path, torch.tensor([[0]]), EntropyConfig(strategy="fixed", max_draft_len=4),
               max_new_tokens=60, temperature=1.0, seed=3, ignore_eos=True).new_tokens for path in ("dynamic", "static")]
    assert out[0] == out[1]


# ------------------------------------------------------------------------------- the cache itself
def test_rollback_moves_the_write_position_and_stale_entries_change_nothing(verifier):
    static, dynamic = StaticCachedModel(verifier), CachedModel(verifier)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    static.prefill(prompt, max_length=40)
    dynamic.prefill(prompt)
    cache, keys = static.cache, static.cache.layers[0].keys
    junk, real = torch.tensor([[60, 61, 62, 63, 59, 58]]), torch.tensor([[9, 2, 6]])
    static.forward(junk, 6)  # a rejected draft: six stale entries past the position after the crop
    static.crop(5)
    assert len(static) == 5 and static.cache is cache and static.cache.layers[0].keys is keys  # nothing copied
    assert all(int(layer.cumulative_length) == 5 for layer in static.cache.layers)
    got, want = static.forward(real, 3), dynamic.forward(real, 3)
    assert torch.allclose(got, want, atol=1e-5)
    static.crop(6)  # keep one of the three: the next token overwrites the two stale ones
    dynamic.crop(6)
    assert torch.allclose(static.forward(junk[:, :2], 2), dynamic.forward(junk[:, :2], 2), atol=1e-5)
    assert len(static) == len(dynamic) == 8


def test_bucket_padding_changes_no_result(verifier):
    """The compiled path's padding, run eagerly (the compiled function swapped for the model's forward)."""
    plain, padded = StaticCachedModel(verifier), StaticCachedModel(verifier)
    padded.buckets, padded._compiled = (4, 8), verifier.forward
    prompt = torch.tensor([[7, 3, 2]])
    for lm in (plain, padded):
        lm.prefill(prompt, max_length=60)
    gen = torch.Generator().manual_seed(0)
    for m in (1, 2, 3, 5, 7, 1, 8):
        tokens = torch.randint(1, 64, (1, m), generator=gen)
        keep = max(1, m - 1)
        assert torch.allclose(padded.forward(tokens, keep), plain.forward(tokens, keep), atol=1e-5), m
        assert len(padded) == len(plain)
        assert all(int(layer.cumulative_length) == len(plain) for layer in padded.cache.layers)
        if m == 3:  # a rejection: back two positions on both
            padded.crop(len(plain) - 2)
            plain.crop(len(plain) - 2)
    assert padded.compiled_calls == 7 and padded.eager_calls == 1  # only the prefill ran unpadded


def test_the_cache_is_sized_per_generation_and_reused(verifier):
    lm = StaticCachedModel(verifier)
    lm.prefill(torch.tensor([[1, 2]]), max_length=100)
    first = lm.cache
    assert lm.capacity == capacity_for(100) == 128 and first.layers[0].max_cache_len == 128
    lm.prefill(torch.tensor([[1, 2, 3]]), max_length=120)  # same capacity: the same tensors, positions reset
    assert lm.cache is first and len(lm) == 3
    lm.prefill(torch.tensor([[1, 2, 3]]), max_length=300)
    assert lm.capacity == 512 and lm.cache is not first
    lm.prefill(torch.tensor([[1, 2, 3]]), max_length=130)
    with pytest.raises(ValueError, match="static KV cache full"):
        lm.forward(torch.ones(1, 254, dtype=torch.long))
    lm.prefill(torch.tensor([[1, 2, 3]]), max_length=90)  # a capacity seen before: its tensors again
    assert lm.cache is first and len(lm) == 3
    assert all(int(layer.cumulative_length) == 3 for layer in first.layers)


def test_cache_len_gives_every_prompt_one_cache_shape(verifier, drafter):
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(max_draft_len=5), kv_cache="static",
                                             cache_len=200)
    for prompt_len in (2, 40, 190):  # 200 + max_draft_len + 1 positions: 256
        decoder.generate(torch.ones(1, prompt_len, dtype=torch.long), max_new_tokens=10)
        assert decoder.verifier.capacity == decoder.drafter.lm.capacity == 256
    decoder.generate(torch.ones(1, 245, dtype=torch.long), max_new_tokens=10)  # needs more: gets more
    assert decoder.verifier.capacity == 512
    decoder.warm_up()  # nothing to compile on the eager static path
    with pytest.raises(ValueError, match="cache_len: must be a positive integer"):
        EntropyBasedSpeculativeDecoder(drafter, verifier, kv_cache="static", cache_len=0)


def test_a_full_generation_fits_the_cache_it_sizes(verifier, drafter):
    """Budget edges: max_new_tokens reached mid-draft, one-token prompt, the largest drafts."""
    cfg = EntropyConfig(strategy="fixed", max_draft_len=8)
    for prompt, n in ((torch.tensor([[9]]), 120), (torch.randint(1, 64, (1, 125)), 3), (torch.tensor([[4, 8]]), 0)):
        assert (run(verifier, verifier, "static", prompt, cfg, max_new_tokens=n).new_tokens
                == run(verifier, verifier, "dynamic", prompt, cfg, max_new_tokens=n).new_tokens)


def test_sliding_window_models_are_refused():
    cfg = MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, sliding_window=4)
    model = MistralForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match="kv_cache='static'.*sliding window"):
        EntropyBasedSpeculativeDecoder.autoregressive(model, kv_cache="static").generate(torch.tensor([[1, 2]]),
                                                                                      max_new_tokens=2)


def test_cache_options_are_checked(verifier):
    with pytest.raises(ValueError, match="kv_cache: must be one of dynamic, static, got 'paged'"):
        EntropyBasedSpeculativeDecoder.autoregressive(verifier, kv_cache="paged")
    with pytest.raises(ValueError, match="compile: needs kv_cache='static'"):
        EntropyBasedSpeculativeDecoder(verifier, verifier, compile=True)
    with pytest.raises(ValueError, match="compile: mode must be one of"):
        EntropyBasedSpeculativeDecoder.autoregressive(verifier, kv_cache="static", compile="fastest")


def test_generate_cli_flags(tmp_path, capsys):
    from entspec.cli import main
    from tiny import save_tiny_pair

    assert main(["generate", "hi", "--kv-cache", "dynamic", "--compile"]) == 2  # refused before any load
    assert "compile: needs kv_cache='static'" in capsys.readouterr().err
    drafter, verifier = save_tiny_pair(tmp_path)
    outputs = []
    for flags in ([], ["--kv-cache", "static"]):
        assert main(["generate", "abc", "--drafter", drafter, "--verifier", verifier, "--device", "cpu",
                     "--max-new-tokens", "12", *flags]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0].split("\n\n")[0] == outputs[1].split("\n\n")[0]  # the same text
    assert "dynamic KV cache" in outputs[0] and "static KV cache" in outputs[1]


# ------------------------------------------------------------------------------- the compiled step (CPU inductor)
def test_compiled_path_gives_the_static_paths_tokens_with_one_graph(verifier, drafter):
    """Greedy and sampled: the compiled forwards give the eager static path's tokens (whose exactness and
    distribution the other tests check); every decode step is one padded call of one reused graph."""
    from torch._dynamo.utils import counters

    cases = greedy_cases(verifier, 2, 16, max_prompt_len=8)
    cfg = EntropyConfig(strategy="absolute", theta_abs=1.0, max_draft_len=5)
    with buckets_for("compiled"):
        decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg, cache_len=24, **decoder_kwargs("compiled"))
    decoder.warm_up()  # compiles at most one graph for this model shape (may be cached already)
    assert decoder.verifier.compiled_calls == 3 and len(decoder.verifier) == 0
    graphs = counters["stats"]["unique_graphs"]
    assert decoder.verifier.buckets == (FAST_BUCKET,) and decoder.verifier.mode == "default"
    for prompt, reference in cases:
        assert decoder.generate(prompt, max_new_tokens=16).new_tokens == reference
    for seed, (prompt, reference) in enumerate(cases * 2):
        assert decoder.generate(prompt, max_new_tokens=16).new_tokens == reference
        for kwargs in (dict(temperature=1.0, seed=seed), dict(temperature=0.7, top_k=5, seed=seed)):
            compiled = decoder.generate(prompt, max_new_tokens=16, **kwargs)
            static = run(drafter, verifier, "static", prompt, cfg, max_new_tokens=16, **kwargs)
            assert compiled.new_tokens == static.new_tokens and rounds(compiled) == rounds(static)
    assert counters["stats"]["unique_graphs"] == graphs  # no recompilation: new prompts, seeds, lengths
    generations = len(cases) * 7
    for lm in (decoder.verifier, decoder.drafter.lm):  # eager: the prefills only (+ the warm-up's)
        assert lm.eager_calls == generations + 1 and lm.compiled_calls > 3 * generations


@pytest.mark.slow
def test_compiled_path_with_the_default_buckets(verifier, drafter):
    """Several graphs (1, 2, 4, 8: the verify lengths of max_draft_len 5), the gate's long catch-up forwards
    (eager past the largest bucket), every rule; tokens equal the verifier's greedy ones."""
    from entspec.engine.stopping import RULES

    cases = greedy_cases(verifier, 4, 24, max_prompt_len=12)
    unrelated = tiny_llama(seed=7)
    for name in sorted(RULES):
        for d in (drafter, unrelated):
            decoder = EntropyBasedSpeculativeDecoder(d, verifier, EntropyConfig(strategy=name, gate=True,
                                                                                max_draft_len=5), **decoder_kwargs("compiled"))
            for prompt, reference in cases:
                assert decoder.generate(prompt, max_new_tokens=24).new_tokens == reference, name


@pytest.mark.slow
def test_generate_cli_compiled(tmp_path, capsys):
    """`entspec generate --compile`: compiled ahead (warm_up), the same text as the dynamic cache."""
    from entspec.cli import main
    from tiny import save_tiny_pair

    drafter, verifier = save_tiny_pair(tmp_path)
    outputs = []
    for flags in ([], ["--compile"]):
        assert main(["generate", "abc", "--drafter", drafter, "--verifier", verifier, "--device", "cpu",
                     "--max-new-tokens", "12", "--max-draft-len", "3", *flags]) == 0
        outputs.append(capsys.readouterr())
    assert outputs[0].out.split("\n\n")[0] == outputs[1].out.split("\n\n")[0]
    assert "static KV cache, compiled (default)" in outputs[1].out and "compiling" in outputs[1].err
