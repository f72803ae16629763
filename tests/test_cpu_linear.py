"""The weight-major Linear product (`entspec.models.cpu_linear`): the same product, the same decoded tokens."""

import copy

import pytest
import torch
from torch import nn

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig, ExperimentConfig
from entspec.engine.config import ConfigError
from entspec.models.cpu_linear import WeightMajorLinear, use_cpu_linear
from entspec.models.quantize import Int8WeightOnlyLinear, quantize_drafter
from tiny import greedy_cases, perturbed, tiny_llama

NEW_TOKENS = 16


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 7), (200,)])
def test_weight_major_product_equals_linear(shape, bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    x = torch.randn(*shape, 48)
    expected = linear(x)
    linear.__class__ = WeightMajorLinear
    got = linear(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_one_row_keeps_pytorchs_product_bit_for_bit():
    """At one row PyTorch's layout is the faster one (scripts/linear_layout.py), so a single row is left to it."""
    torch.manual_seed(0)
    layer = nn.Linear(48, 96)
    fast = copy.deepcopy(layer)
    fast.__class__ = WeightMajorLinear
    one, two = torch.randn(1, 1, 48), torch.randn(1, 2, 48)
    assert torch.equal(fast(one), layer(one))
    assert torch.allclose(fast(two), layer(two), atol=1e-5)


def test_auto_changes_float32_cpu_models_only():
    model = tiny_llama(seed=0)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert use_cpu_linear(copy.deepcopy(model), "torch") == 0
    assert use_cpu_linear(copy.deepcopy(model).to(torch.bfloat16), "auto") == 0
    assert use_cpu_linear(copy.deepcopy(model).to(torch.bfloat16), "weight-major") == n_linear
    changed = copy.deepcopy(model)
    assert use_cpu_linear(changed, "auto") == n_linear > 0
    assert all(type(m) is not nn.Linear for m in changed.modules())
    assert changed.state_dict().keys() == model.state_dict().keys()


def test_tied_weights_stay_tied_and_quantized_layers_are_left_alone():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    use_cpu_linear(model, "auto")
    assert isinstance(model.lm_head, WeightMajorLinear)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    drafter = quantize_drafter(tiny_llama(seed=3), "int8-weight-only")
    assert use_cpu_linear(drafter, "auto") == 0
    assert any(isinstance(m, Int8WeightOnlyLinear) for m in drafter.modules())


def test_a_bad_mode_is_one_line_naming_the_field():
    with pytest.raises(ValueError, match="^cpu_linear must be one of auto, weight-major, torch, got 'fast'$"):
        use_cpu_linear(tiny_llama(seed=0), "fast")
    with pytest.raises(ConfigError, match="cpu_linear"):
        ExperimentConfig(cpu_linear="fast")


@pytest.fixture(scope="module")
def weight_major_pair():
    verifier = tiny_llama(seed=0)
    drafter = perturbed(verifier, noise=0.05)
    cases = greedy_cases(verifier, 8, NEW_TOKENS, max_prompt_len=12)  # references from the unchanged verifier
    for model in (verifier, drafter):
        use_cpu_linear(model, "auto")
    return drafter, verifier, cases


@pytest.mark.parametrize("strategy", ["absolute", "svip", "adaptive"])
def test_greedy_decoding_with_weight_major_models_is_the_verifier_greedy(strategy, weight_major_pair):
    drafter, verifier, cases = weight_major_pair
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy=strategy, max_draft_len=5))
    for i, (prompt, reference) in enumerate(cases):
        own = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                do_sample=False)[0, prompt.shape[1]:].tolist()
        assert own == reference, f"prompt {i}: the layout changed the verifier's own greedy output"
        assert decoder.generate(prompt, max_new_tokens=NEW_TOKENS).new_tokens == reference, f"prompt {i}"
    batched = decoder.generate_batch([p for p, _ in cases], max_new_tokens=NEW_TOKENS)
    assert [r.new_tokens for r in batched] == [ref for _, ref in cases]
