"""When to stop drafting: the `StoppingCriterion` protocol, its registry and the registered rules.

- `base`: what a rule sees (`DraftState`, `RoundFeedback`), the protocol and the registry (`register`, `RULES`);
- `entropy`: the entropy rules (absolute, relative, window, combined, adaptive);
- `field`: the rules we compare against (fixed k, confidence, heuristic, SVIP, AdaEDL);
- `goodput`: the experimental cost-aware rule with the calibrations `entspec tune` fits for it.

A new rule is one class with a ``@register("name")`` line in any module that is imported.
"""

from . import base, entropy, field, goodput  # the registry first; importing the rules registers them
from .base import *  # noqa: F401,F403
from .entropy import *  # noqa: F401,F403
from .field import *  # noqa: F401,F403
from .goodput import *  # noqa: F401,F403

__all__ = [*base.__all__, *entropy.__all__, *field.__all__, *goodput.__all__]
