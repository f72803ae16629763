"""entspec: entropy-based speculative decoding.

A small drafter model keeps proposing tokens until the entropy of its own next-token distribution says it
is unsure; a large verifier checks the whole draft in one forward pass and keeps exactly its own output
distribution (Leviathan et al. 2023).
"""

from .config import ConfigError, EntropyConfig
from .decoder import EntropyBasedSpeculativeDecoder
from .drafter import EntropyBasedDrafter
from .entropy import EntropyComputer
from .records import GenerationResult, RoundRecord
from .sampling import SamplingParams
from .stopping import STOPPING_CRITERIA, StoppingCriterion, register

__version__ = "0.1.0"

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
]
