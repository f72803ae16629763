"""An int8 drafter (entspec.models.quantize) keeps decoding lossless: greedy output is the verifier's own, and
sampled output follows the verifier's distribution; only the drafter's speed and acceptance change."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig, ExperimentConfig, SamplingParams
from entspec.engine.config import ConfigError
from entspec.models import load_model_pair
from entspec.models.quantize import Int8WeightOnlyLinear, quantize_drafter
from stats_helpers import chi2_pvalue
from tiny import greedy_cases, context_free_gpt2, perturbed, save_tiny_pair, tiny_llama

METHODS = ["int8-weight-only", "int8-dynamic"]
NUM_PROMPTS, NEW_TOKENS = 12, 16


@pytest.fixture(scope="module")
def prompts_and_references(verifier):
    return greedy_cases(verifier, NUM_PROMPTS, NEW_TOKENS, max_prompt_len=9)


def quantized(model, method, dtype=torch.float32):
    return quantize_drafter(copy.deepcopy(model).to(dtype), method)


@pytest.mark.parametrize("method,dtype", [("int8-weight-only", torch.float32), ("int8-weight-only", torch.bfloat16),
                                          ("int8-dynamic", torch.float32)])
def test_every_linear_layer_is_int8_and_the_logits_stay_close(verifier, method, dtype):
    model = quantized(verifier, method, dtype)
    assert not any(type(m) is nn.Linear for m in model.modules())  # LM head included
    if method == "int8-weight-only":
        assert sum(isinstance(m, Int8WeightOnlyLinear) for m in model.modules()) == 2 * 7 + 1
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        ref, out = verifier(prompt).logits, model(prompt).logits.float()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.75
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strategy", ["absolute", "fixed", "svip", "confidence", "heuristic"])
def test_greedy_output_with_an_int8_drafter_equals_verifier_greedy(verifier, prompts_and_references, method,
                                                                    strategy):
    drafter = quantized(perturbed(verifier, noise=0.05), method)
    accepted = drafted = 0
    for i, (prompt, reference) in enumerate(prompts_and_references):
        cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=5)
        result = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference, f"prompt {i}"
        accepted += sum(r.accepted for r in result.rounds)
        drafted += sum(r.drafted for r in result.rounds)
    assert 0.1 < accepted / drafted < 1.0  # a useful drafter, and rejections were exercised


def test_the_int8_copy_of_the_verifier_is_a_near_perfect_drafter(verifier, prompts_and_references):
    drafter = quantized(verifier, "int8-weight-only")
    cfg = EntropyConfig(strategy="fixed", max_draft_len=4)
    rates = []
    for prompt, reference in prompts_and_references:
        result = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(prompt, max_new_tokens=NEW_TOKENS)
        assert result.new_tokens == reference
        rates.append(sum(r.accepted for r in result.rounds) / sum(r.drafted for r in result.rounds))
    assert np.mean(rates) > 0.8


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("setting", [dict(temperature=1.0), dict(temperature=0.7, top_k=5)])
def test_sampled_output_with_an_int8_drafter_is_iid_from_p(method, setting):
    """Context-free pair: every position has the same p, so the generated tokens are draws from p."""
    gen = torch.Generator().manual_seed(0)
    target_logits = torch.randn(12, generator=gen) * 1.5
    drafter = quantize_drafter(context_free_gpt2(target_logits + torch.randn(12, generator=gen)), method)
    verifier = context_free_gpt2(target_logits)
    cfg = EntropyConfig(strategy="absolute", theta_abs=1.8, max_draft_len=4)
    result = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg).generate(
        torch.tensor([[0]]), max_new_tokens=1200, seed=11, ignore_eos=True, **setting)
    target_probs = torch.softmax(SamplingParams(**setting).process(target_logits[None]), -1)[0]
    assert sum(r.accepted for r in result.rounds) < sum(r.drafted for r in result.rounds)
    assert chi2_pvalue(result.new_tokens, target_probs.numpy()) > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_first_two_tokens_with_an_int8_drafter_follow_the_verifier_joint(method):
    verifier = tiny_llama(seed=0, vocab=8, sharpness=6.0)
    drafter = quantize_drafter(perturbed(verifier, noise=0.3), method)
    prompt = torch.tensor([[1, 5, 2]])
    decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="absolute", theta_abs=1.0,
                                                                              max_draft_len=3))
    pairs = [tokens[0] * 8 + tokens[1] for tokens in
             (decoder.generate(prompt, max_new_tokens=3, seed=s, temperature=1.0).new_tokens for s in range(700))]
    with torch.inference_mode():
        p1 = torch.softmax(verifier(prompt).logits[0, -1], -1)
        seqs = torch.cat([prompt.repeat(8, 1), torch.arange(8)[:, None]], dim=1)
        p2 = torch.softmax(verifier(seqs).logits[:, -1], -1)
    assert chi2_pvalue(np.array(pairs), (p1[:, None] * p2).numpy().ravel()) > 1e-3


def test_load_model_pair_quantizes_the_drafter_only(tmp_path):
    drafter_dir, verifier_dir = save_tiny_pair(tmp_path)
    pair = load_model_pair(drafter_dir, verifier_dir, dtype="float32", device="cpu", progress=False,
                           drafter_quantization="int8-weight-only")
    assert any(isinstance(m, Int8WeightOnlyLinear) for m in pair.drafter.modules())
    assert not any(isinstance(m, Int8WeightOnlyLinear) for m in pair.verifier.modules())
    pair = load_model_pair(drafter_dir, verifier_dir, dtype="float32", device="cpu", progress=False,
                           drafter_quantization="int8")  # float32 on CPU: dynamic
    assert any("quantized" in type(m).__module__ for m in pair.drafter.modules())
    assert all(type(m) is not nn.Linear for m in pair.drafter.modules())
    assert not any("quantized" in type(m).__module__ for m in pair.verifier.modules())
    with pytest.raises(ValueError, match="drafter_quantization"):
        load_model_pair(drafter_dir, verifier_dir, device="cpu", progress=False, drafter_quantization="int4")
    with pytest.raises(ConfigError, match="drafter_quantization"):
        ExperimentConfig(drafter_quantization="int4")


@pytest.mark.parametrize("method", METHODS)
def test_hf_assisted_generation_runs_with_the_int8_drafter(verifier, prompts_and_references, method):
    """The fair engine comparison: Hugging Face assisted generation gets the same int8 drafter."""
    from entspec.experiment.hf_baselines import hf_generate

    drafter = quantized(perturbed(verifier, noise=0.05), method)
    prompt, reference = prompts_and_references[3]
    result = hf_generate(verifier, prompt, drafter=drafter, max_new_tokens=NEW_TOKENS, ignore_eos=True,
                         num_assistant_tokens=4, schedule="constant", confidence_threshold=0.0)
    assert result.new_tokens == reference
    assert result.counters["drafter_calls"] > 0


def test_an_experiment_records_the_quantization_and_refuses_to_resume_with_another(tmp_path):
    import yaml

    from entspec.experiment import ExperimentRunner
    from entspec.records import read_jsonl

    drafter_dir, verifier_dir = save_tiny_pair(tmp_path / "pair")
    out = tmp_path / "exp"

    def config(**kw):
        return ExperimentConfig(drafter_model_path=drafter_dir, verifier_model_path=verifier_dir, dataset_name="mix",
                                num_samples=1, max_new_tokens=8, max_sequence_length=160, output_dir=str(out),
                                experiment_name="q", baselines=False, analyze=False, warmup_tokens=0,
                                methods=[{"strategy": "absolute", "max_draft_len": 4}], **kw)

    results = ExperimentRunner(config(drafter_quantization="int8"), progress=False).run()
    rows = list(read_jsonl(results))
    assert rows and all(row["config"]["drafter_quantization"] == "int8" for row in rows)
    with pytest.raises(ConfigError, match="^drafter_quantization:"):
        ExperimentRunner(config(drafter_quantization="none"), progress=False).run()
    # A folder saved before the field existed was made without quantization: resuming it as "none" is allowed.
    saved = out / "configs" / "experiment.yaml"
    data = yaml.safe_load(saved.read_text())
    del data["drafter_quantization"]
    saved.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="^drafter_quantization:"):
        ExperimentRunner(config(drafter_quantization="int8"), progress=False).run()
    ExperimentRunner(config(drafter_quantization="none"), progress=False).run()


@pytest.mark.parametrize("dtype,expected", [(torch.float32, "int8-dynamic"), (torch.bfloat16, "int8-weight-only")])
def test_int8_picks_the_method_fast_for_the_drafters_dtype(verifier, dtype, expected):
    from entspec.models.quantize import int8_method

    assert int8_method(dtype, torch.device("cpu")) == expected
    assert int8_method(torch.float32, torch.device("cuda")) == "int8-weight-only"  # dynamic is CPU only
    model = quantized(verifier, "int8", dtype)
    dynamic = any("quantized" in type(m).__module__ for m in model.modules())
    assert dynamic == (expected == "int8-dynamic")
    assert any(isinstance(m, Int8WeightOnlyLinear) for m in model.modules()) == (not dynamic)
