"""Tiny random causal LMs built in the tests: no download, a few milliseconds per forward."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int = 0, vocab: int = 64, sharpness: float = 30.0, layers: int = 2) -> LlamaForCausalLM:
    """A random Llama whose output head is scaled by ``sharpness`` so next-token entropies vary widely."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=0, eos_token_id=None, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def greedy_cases(verifier, num_prompts: int, new_tokens: int, max_prompt_len: int) -> list:
    """``num_prompts`` random prompts (lengths 1..max_prompt_len) with the verifier's own greedy continuation."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    cases = []
    for i in range(num_prompts):
        prompt = torch.randint(1, verifier.config.vocab_size, (1, 1 + i % max_prompt_len), generator=gen)
        ref = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                do_sample=False)
        cases.append((prompt, ref[0, prompt.shape[1]:].tolist()))
    return cases


def perturbed(model: LlamaForCausalLM, noise: float, seed: int = 1) -> LlamaForCausalLM:
    """A copy of ``model`` with Gaussian noise (relative scale ``noise``) on every weight: a partly agreeing drafter."""
    torch.manual_seed(seed)
    clone = type(model)(model.config).eval()
    clone.load_state_dict(model.state_dict())
    clone.generation_config = model.generation_config
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(noise * p.std() * torch.randn_like(p))
    return clone


def context_free_gpt2(logits: torch.Tensor) -> GPT2LMHeadModel:
    """A GPT-2 whose next-token logits are ``logits [V]`` at every position, whatever the context.

    Every transformer weight is zero, so the final hidden state is ln_f's bias e_0 and the untied head maps
    it to ``logits``. Generated tokens are then i.i.d. draws from softmax(logits).
    """
    vocab = logits.shape[0]
    cfg = GPT2Config(vocab_size=vocab, n_embd=8, n_layer=1, n_head=2, n_positions=8192,
                     tie_word_embeddings=False, bos_token_id=0, eos_token_id=None)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = logits
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + <s>, </s>, <unk>; no merges) with a tiny chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *sorted(alphabet)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant:{% endif %}")
    return fast


def save_tiny_pair(root) -> tuple[str, str]:
    """A drafter/verifier folder pair (tiny Llamas + the byte tokenizer) for runner and CLI tests."""
    from pathlib import Path

    root = Path(root)
    tokenizer = byte_tokenizer()
    verifier = tiny_llama(seed=0, vocab=len(tokenizer), sharpness=20.0)
    drafter = perturbed(verifier, noise=0.05)
    paths = []
    for name, model in (("drafter", drafter), ("verifier", verifier)):
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths.append(str(root / name))
    return paths[0], paths[1]


def tiny_sliding(family: str, seed: int = 0, vocab: int = 64, window: int = 8, sharpness: float = 20.0):
    """A tiny random model whose attention has sliding-window layers (``window`` positions): "mistral" (every
    layer), "gemma2" (alternating) or "gemma3" (sliding, then full), head scaled like `tiny_llama`."""
    from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig,
                              MistralForCausalLM)

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                  sliding_window=window, bos_token_id=0, eos_token_id=None, pad_token_id=0,
                  tie_word_embeddings=False)
    if family == "mistral":
        model = MistralForCausalLM(MistralConfig(**common))
    elif family == "gemma2":
        model = Gemma2ForCausalLM(Gemma2Config(**common, layer_types=["sliding_attention", "full_attention"]))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention"]))
    model.eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def tiny_experiment_yaml(tmp_path, **fields):
    """An experiment YAML on a saved tiny pair (``mix`` prompts, output in ``tmp_path/exp``); ``fields`` override."""
    import yaml

    drafter, verifier = save_tiny_pair(tmp_path / "pair")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "drafter_model_path": drafter, "verifier_model_path": verifier, "dataset_name": "mix", "num_samples": 6,
        "max_new_tokens": 16, "max_sequence_length": 200, "output_dir": str(tmp_path / "exp"),
        "experiment_name": "t", "threads": 1, **fields}))
    return config
