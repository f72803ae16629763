"""GGUF -> transformers safetensors folder, done once per checkpoint and cached.

Loading a GGUF with transformers dequantizes every tensor (15-50 s); the resulting float model is saved
with ``save_pretrained`` so later loads take seconds.

Saved dtype: **float32**. Dequantized Q4_K/Q4_1 weights are ``d * scale * q - m`` with fp16 ``d``/``m``;
measured on SmolLM2-135M, 79 % of them are *not* representable in bfloat16, so a bf16 folder would not be
the GGUF model. fp32 is exact (the converted folder gives bit-identical logits to the direct GGUF load);
loading it as bf16 later is a plain cast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: torch.dtype = torch.float32) -> Path:
    """Dequantize ``gguf_path`` and write a transformers folder (config, safetensors, tokenizer) to ``out_dir``.

    The chat template and the eos/pad/bos ids travel with the tokenizer; the generation config gets the
    tokenizer's eos id (e.g. ``<|im_end|>`` for Qwen instruct) so ``generate`` stops at the end of a turn.
    Returns ``out_dir``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    # save_pretrained refuses GGUF-quantized models; the weights are already plain floats, so drop the marks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    _fix_generation_config(model, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    log.info("converted %s -> %s (%s)", gguf_path, out_dir, dtype)
    return out_dir


def _fix_generation_config(model, tokenizer) -> None:
    """Make ``generation_config`` stop on the tokenizer's eos and pad with its pad token."""
    gen = model.generation_config
    eos = gen.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    if eos_ids:
        gen.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
        model.config.eos_token_id = gen.eos_token_id
    if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    if gen.bos_token_id is None and tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
