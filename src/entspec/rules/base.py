"""The `StoppingCriterion` protocol, what a round shows a rule, and the registry of rules.

A rule sees the drafted tokens of the current round (their entropies and draft probabilities) and the
outcome of earlier rounds (through `update`), and says stop or continue. The drafter consults a rule only
after `min_draft_len` tokens and always stops at `max_draft_len`; a token whose statistics trip the rule
is still part of the draft. A new rule is one class with a `@register("name")` line; nothing else changes.
A rule with parameters of its own declares them as a small dataclass (``params=``): typed, with defaults and
bounds (`entspec.validate.bounds`); `EntropyConfig` then accepts and validates them like its own fields (and
refuses a rule whose parameter shadows one of its fields, or whose sweep names an unknown one).
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..engine.config import EntropyConfig

__all__ = ["RULE_PARAMS", "RULES", "STOPPING_CRITERIA", "DraftState", "ParamDecl", "RoundFeedback", "RuleInfo",
           "StoppingCriterion", "build_criterion", "entropy_rules", "register", "threshold_parameter", "unregister"]


@dataclass
class DraftState:
    """The current round so far: one entry per drafted token."""

    entropies: list[float] = field(default_factory=list)  # configured entropy type, in the configured unit
    token_probs: list[float] = field(default_factory=list)  # q(x_t): probability of the drafted token
    shannon_nats: list[float] = field(default_factory=list)  # Shannon entropy in nats (SVIP, AdaEDL)

    def __len__(self) -> int:
        return len(self.entropies)


@dataclass(frozen=True)
class RoundFeedback:
    """What verification said about the last round."""

    drafted: int
    accepted: int
    entropies: list[float]
    token_probs: list[float] = field(default_factory=list)  # q(x_i) of the drafted tokens

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")


class StoppingCriterion(ABC):
    """A drafting policy. Subclasses implement `should_stop`; adaptive ones also `update` and `reset`."""

    name: str = ""

    def __init__(self, config: EntropyConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget online state: called at the start of every generation."""

    @abstractmethod
    def should_stop(self, state: DraftState) -> bool:
        """True to end the round after the last drafted token in ``state``."""

    def update(self, feedback: RoundFeedback) -> None:
        """Learn from the verifier's verdict on the last round."""

    @property
    def threshold(self) -> float | None:
        """The rule's current threshold, recorded in the trace (None for rules without one)."""
        return None


@dataclass(frozen=True)
class RuleInfo:
    """What a registered rule says about itself; bench, analysis, tune and the CLI ask this, not a list.

    Attributes:
        name: the ``strategy`` name.
        cls: the `StoppingCriterion` subclass.
        reads: the `DraftState` fields the rule reads ("entropies", "token_probs", "shannon_nats"); empty for
            rules that decide from the draft length and feedback alone (the drafter then reads nothing back).
        threshold: the `EntropyConfig` field that is the rule's main knob (x axis of sweeps), if any.
        sweep: candidate values per `EntropyConfig` field, the grid `entspec tune` replays.
        params: the dataclass of the rule's own parameters (None: it has none beyond the shared fields).
    """

    name: str
    cls: type["StoppingCriterion"]
    reads: frozenset[str]
    threshold: str | None
    sweep: dict[str, tuple]
    params: type | None = None

    @property
    def reads_entropy(self) -> bool:
        return bool(self.reads & {"entropies", "shannon_nats"})

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.params)) if self.params else ()

    def make_params(self, config: EntropyConfig) -> Any:
        """The rule's parameters from ``config`` as its typed dataclass (None if it declares none)."""
        return self.params(**{n: getattr(config, n) for n in self.param_names}) if self.params else None


@dataclass(frozen=True)
class ParamDecl:
    """One rule parameter as declared: its type hint, default, bounds (field metadata) and declaring rule."""

    hint: Any
    default: Any
    metadata: Any
    owner: str


STOPPING_CRITERIA: dict[str, type[StoppingCriterion]] = {}
RULES: dict[str, RuleInfo] = {}
RULE_PARAMS: dict[str, ParamDecl] = {}  # every registered rule's parameters, by name
# The shared `EntropyConfig` fields, filled in by `entspec.engine.config` when it loads (it imports this package,
# not the other way round); until then a rule's names are checked when a config first uses it.
SHARED_FIELDS: set[str] = set()


def register(
    name: str,
    *,
    reads: tuple[str, ...] = ("entropies",),
    threshold: str | None = None,
    sweep: dict[str, tuple] | None = None,
    params: type | None = None,
) -> Callable[[type[StoppingCriterion]], type[StoppingCriterion]]:
    """Class decorator adding a rule under ``name``, with its self-description (`RuleInfo`).

    ``params`` is a dataclass of the rule's own parameters (typed, with defaults; bounds as field metadata,
    cross-field checks in its ``__post_init__``); a name another rule already declares must agree in type and
    default, no name may shadow a shared `EntropyConfig` field, and ``threshold`` and ``sweep`` must name fields
    or parameters (`check_names`).
    """
    unknown = set(reads) - set(DraftState.__dataclass_fields__)
    if unknown:
        raise ValueError(f"register({name!r}): reads names unknown DraftState fields {sorted(unknown)}")

    def add(cls: type[StoppingCriterion]) -> type[StoppingCriterion]:
        if name in STOPPING_CRITERIA:
            raise ValueError(f"stopping criterion {name!r} is registered twice")
        decls = _declarations(name, params)
        info = RuleInfo(name, cls, frozenset(reads), threshold, dict(sweep or {}), params)
        if SHARED_FIELDS:
            check_names(info, set(decls))
        cls.name = name
        STOPPING_CRITERIA[name] = cls
        RULES[name] = info
        RULE_PARAMS.update(decls)
        return cls

    return add


def check_names(info: RuleInfo, declared: set[str] | None = None) -> None:
    """No parameter of the rule shadows a shared `EntropyConfig` field; its threshold and sweep name fields or
    parameters that exist (``declared``: its own, before it is in `RULE_PARAMS`)."""
    for name in sorted(set(info.param_names) & SHARED_FIELDS):
        raise ValueError(f"register({info.name!r}): parameter {name!r} shadows an EntropyConfig field")
    known = SHARED_FIELDS | set(RULE_PARAMS) | (declared or set())
    for key in [info.threshold, *info.sweep]:
        if key is not None and key not in known:
            raise ValueError(f"register({info.name!r}): {key!r} is neither an EntropyConfig field nor a declared "
                             "parameter")


def _declarations(rule: str, params: type | None) -> dict[str, ParamDecl]:
    if params is None:
        return {}
    if not dataclasses.is_dataclass(params):
        raise ValueError(f"register({rule!r}): params must be a dataclass")
    hints = typing.get_type_hints(params)
    out = {}
    for f in dataclasses.fields(params):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"register({rule!r}): parameter {f.name!r} needs a default")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        decl = ParamDecl(hints[f.name], default, f.metadata, rule)
        other = RULE_PARAMS.get(f.name)
        if other is not None and (other.hint, other.default) != (decl.hint, decl.default):
            raise ValueError(f"register({rule!r}): parameter {f.name!r} is declared differently by {other.owner!r}")
        out[f.name] = other or decl
    return out


def unregister(name: str) -> None:
    """Remove a rule and the parameters only it declares (tests and notebooks that register a throw-away rule)."""
    STOPPING_CRITERIA.pop(name, None)
    info = RULES.pop(name, None)
    still_declared = {p for other in RULES.values() for p in other.param_names}
    for param in info.param_names if info else ():
        if param not in still_declared:
            del RULE_PARAMS[param]


def entropy_rules() -> tuple[str, ...]:
    """Names of the registered rules that read the drafter's entropy."""
    return tuple(name for name, info in RULES.items() if info.reads_entropy)


def threshold_parameter(strategy: str) -> str | None:
    """The field a threshold sweep of ``strategy`` moves (None for unknown or knob-less rules)."""
    info = RULES.get(strategy)
    return info.threshold if info else None


def build_criterion(config: EntropyConfig) -> StoppingCriterion:
    return STOPPING_CRITERIA[config.strategy](config)
