"""When to stop drafting: the `StoppingCriterion` protocol, its registry and the registered rules.

- `base`: what a rule sees (`DraftState`, `RoundFeedback`), the protocol and the registry (`register`, `RULES`);
- `entropy`: the entropy rules (absolute, relative, window, combined, adaptive);
- `field`: the rules we compare against (fixed k, confidence, heuristic, SVIP, AdaEDL);
- `goodput`: the experimental cost-aware rule with the calibrations `entspec tune` fits for it.

A new rule is one class with a ``@register("name")`` line in any module that is imported.
"""

from .base import (
    RULE_PARAMS,
    RULES,
    STOPPING_CRITERIA,
    DraftState,
    ParamDecl,
    RoundFeedback,
    RuleInfo,
    StoppingCriterion,
    build_criterion,
    entropy_rules,
    register,
    threshold_parameter,
    unregister,
)
from . import entropy, field, goodput  # noqa: E402,F401  (registers the built-in rules; after the registry)
from .entropy import AbsoluteEntropy, AdaptiveEntropy, CombinedCriterion, RelativeEntropy, WindowEntropy
from .field import SVIP, AdaEDL, ConfidenceCriterion, FixedLength, HeuristicSchedule
from .goodput import Goodput

__all__ = [
    "RULE_PARAMS", "RULES", "STOPPING_CRITERIA", "DraftState", "ParamDecl", "RoundFeedback", "RuleInfo",
    "StoppingCriterion", "build_criterion", "entropy_rules", "register", "threshold_parameter", "unregister",
    "AbsoluteEntropy", "AdaptiveEntropy", "CombinedCriterion", "RelativeEntropy", "WindowEntropy", "SVIP", "AdaEDL",
    "ConfidenceCriterion", "FixedLength", "HeuristicSchedule", "Goodput",
]
