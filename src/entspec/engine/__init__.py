"""The decoding engine: entropy, stopping rules, the speculation gate, sampling and verification, the KV
cache, the drafter, the decode loop and its per-round records. Nothing here knows about experiments."""

from .config import ConfigError, EntropyConfig
from .decoder import EntropyBasedSpeculativeDecoder
from .drafter import EntropyBasedDrafter
from .entropy import EntropyComputer
from ..records import GenerationResult, RoundRecord
from .sampling import SamplingParams
from ..rules import RULES, STOPPING_CRITERIA, RuleInfo, StoppingCriterion, register

__all__ = [
    "ConfigError", "EntropyBasedDrafter", "EntropyBasedSpeculativeDecoder", "EntropyComputer", "EntropyConfig",
    "GenerationResult", "RULES", "RoundRecord", "RuleInfo", "STOPPING_CRITERIA", "SamplingParams",
    "StoppingCriterion", "register",
]
