"""entspec: entropy-based speculative decoding.

A small drafter model keeps proposing tokens until the entropy of its own next-token distribution says it
is unsure; a large verifier checks the whole draft in one forward pass and keeps exactly its own output
distribution (Leviathan et al. 2023).

The engine names are imported eagerly; the evaluation, experiment and analysis names load on first use.
"""

from importlib import import_module
from typing import Any

from .engine import (
    STOPPING_CRITERIA,
    ConfigError,
    EntropyBasedDrafter,
    EntropyBasedSpeculativeDecoder,
    EntropyComputer,
    EntropyConfig,
    GenerationResult,
    RoundRecord,
    SamplingParams,
    StoppingCriterion,
    register,
)

__version__ = "0.1.0"

_LAZY = {
    "BatchCostModel": "entspec.engine.batch_cost",
    "SpeculativeDecodingEvaluator": "entspec.metrics",
    "ComparativeEvaluator": "entspec.metrics",
    "ExperimentConfig": "entspec.experiment",
    "ExperimentRunner": "entspec.experiment",
    "AnalysisPipeline": "entspec.analysis",
    "load_model_pair": "entspec.models",
    "load_prompts": "entspec.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'entspec' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "EntropyBasedDrafter",
    "EntropyBasedSpeculativeDecoder",
    "EntropyComputer",
    "EntropyConfig",
    "GenerationResult",
    "RoundRecord",
    "STOPPING_CRITERIA",
    "SamplingParams",
    "StoppingCriterion",
    "register",
    *_LAZY,
]
