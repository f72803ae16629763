"""Real models for entspec: offline registry, fetch + GGUF conversion, loading, prompt encoding."""

from entspec.models.convert import convert_gguf
from entspec.models.fetch import ChecksumError, fetch_gguf_file, fetch_model, model_dir, sha256_file, verify_folder
from entspec.models.loading import (
    ModelNotFoundError,
    ModelPair,
    TokenizerMismatchError,
    check_tokenizers,
    check_vocab_sizes,
    load_model,
    load_model_pair,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from entspec.models.prompts import encode_prompt, render_prompt
from entspec.models.registry import DEFAULT_PAIR, MODELS, PAIRS, ModelEntry, UnknownName, get_entry, get_pair

__all__ = [
    "ChecksumError", "DEFAULT_PAIR", "MODELS", "ModelEntry", "ModelNotFoundError", "ModelPair", "PAIRS",
    "TokenizerMismatchError", "UnknownName", "check_tokenizers", "check_vocab_sizes", "convert_gguf", "encode_prompt",
    "fetch_gguf_file", "fetch_model", "get_entry", "get_pair", "load_model", "load_model_pair",
    "load_tokenizer", "model_dir", "render_prompt", "resolve_device", "resolve_dtype", "sha256_file",
    "verify_folder",
]
