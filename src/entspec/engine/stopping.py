"""When to stop drafting: the `StoppingCriterion` protocol and its registry.

A rule sees the drafted tokens of the current round (their entropies and draft probabilities) and the
outcome of earlier rounds (through `update`), and says stop or continue. The drafter consults a rule only
after `min_draft_len` tokens and always stops at `max_draft_len`; a token whose statistics trip the rule
is still part of the draft. A new rule is one class with a `@register("name")` line; nothing else changes.
A rule with parameters of its own declares them as a small dataclass (``params=``): typed, with defaults and
bounds (`entspec.validate.bounds`); `EntropyConfig` then accepts and validates them like its own fields.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..validate import ConfigError, bounds, check, check_knots
from .config import EntropyConfig


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
    default, and no name may shadow a shared `EntropyConfig` field.
    """
    unknown = set(reads) - set(DraftState.__dataclass_fields__)
    if unknown:
        raise ValueError(f"register({name!r}): reads names unknown DraftState fields {sorted(unknown)}")

    def add(cls: type[StoppingCriterion]) -> type[StoppingCriterion]:
        if name in STOPPING_CRITERIA:
            raise ValueError(f"stopping criterion {name!r} is registered twice")
        decls = _declarations(name, params)
        info = RuleInfo(name, cls, frozenset(reads), threshold, dict(sweep or {}), params)
        known = EntropyConfig.parameter_names() | set(decls)
        for key in [threshold, *info.sweep]:
            if key is not None and key not in known:
                raise ValueError(f"register({name!r}): {key!r} is neither an EntropyConfig field nor a declared parameter")
        cls.name = name
        STOPPING_CRITERIA[name] = cls
        RULES[name] = info
        RULE_PARAMS.update(decls)
        return cls

    return add


def _declarations(rule: str, params: type | None) -> dict[str, ParamDecl]:
    if params is None:
        return {}
    if not dataclasses.is_dataclass(params):
        raise ValueError(f"register({rule!r}): params must be a dataclass")
    hints = typing.get_type_hints(params)
    shared = {f.name for f in dataclasses.fields(EntropyConfig)}
    out = {}
    for f in dataclasses.fields(params):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"register({rule!r}): parameter {f.name!r} needs a default")
        if f.name in shared:
            raise ValueError(f"register({rule!r}): parameter {f.name!r} shadows an EntropyConfig field")
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


# --- entropy rules ---------------------------------------------------------------------------------------


@register("absolute", threshold="theta_abs",
          sweep={"theta_abs": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0), "max_draft_len": (8, 12, 20)})
class AbsoluteEntropy(StoppingCriterion):
    """Stop when H_t > theta_abs."""

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.config.theta_abs

    @property
    def threshold(self) -> float:
        return self.config.theta_abs


@dataclass(frozen=True)
class RelativeParams:
    theta_rel: float = field(default=1.5, metadata=bounds(min=0))  # stop when H_t > theta_rel x reference
    reference_momentum: float = field(default=0.9, metadata=bounds(min=0, max=1))  # EMA of accepted tokens' entropy


@register("relative", threshold="theta_rel", params=RelativeParams,
          sweep={"theta_rel": (0.5, 1.0, 1.5, 2.0, 3.0, 5.0), "theta_abs": (1.0, 2.0), "max_draft_len": (8, 12, 20)})
class RelativeEntropy(StoppingCriterion):
    """Stop when H_t > theta_rel x reference entropy.

    The reference is an exponential moving average (momentum `reference_momentum`) of the drafter's entropy
    on tokens the verifier accepted in earlier rounds: "more uncertain than usual where it is usually
    right". Until a first token has been accepted, the absolute rule with `theta_abs` stands in.
    """

    def reset(self) -> None:
        self.reference: float | None = None

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.threshold

    def update(self, feedback: RoundFeedback) -> None:
        m = self.config.reference_momentum
        for h in feedback.entropies[: feedback.accepted]:
            self.reference = h if self.reference is None else m * self.reference + (1 - m) * h

    @property
    def threshold(self) -> float:
        if self.reference is None:
            return self.config.theta_abs
        return self.config.theta_rel * self.reference


@dataclass(frozen=True)
class WindowParams:
    window_size: int = field(default=3, metadata=bounds(min=1))
    theta_window: float | None = field(default=None, metadata=bounds(min=0))  # None: theta_abs


@register("window", threshold="theta_window", params=WindowParams,
          sweep={"theta_window": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0), "window_size": (2, 3), "max_draft_len": (8, 12, 20)})
class WindowEntropy(StoppingCriterion):
    """Stop when the mean entropy of the last `window_size` drafted tokens exceeds `theta_window`.

    Smooths single spikes; fewer than `window_size` tokens are averaged as they are.
    """

    def should_stop(self, state: DraftState) -> bool:
        recent = state.entropies[-self.config.window_size :]
        return sum(recent) / len(recent) > self.threshold

    @property
    def threshold(self) -> float:
        w = self.config.theta_window
        return self.config.theta_abs if w is None else w


@dataclass(frozen=True)
class CombinedParams:
    criteria: list[Any] = field(default_factory=lambda: ["absolute", "window"])  # names, or dicts of overrides
    combine: str = field(default="any", metadata=bounds(choices=("any", "all")))

    def __post_init__(self) -> None:
        check(len(self.criteria) > 0, "criteria", self.criteria, "must be a non-empty list")


@register("combined", reads=("entropies", "token_probs", "shannon_nats"), threshold="theta_abs", params=CombinedParams,
          sweep={"theta_abs": (0.5, 1.0, 2.0, 3.0), "max_draft_len": (8, 12, 20)})
class CombinedCriterion(StoppingCriterion):
    """Several rules joined by ``combine`` = "any" (stop when one says stop) or "all".

    ``criteria`` items are rule names, or dicts ``{"strategy": name, **field overrides}``.
    """

    def __init__(self, config: EntropyConfig) -> None:
        self.rules = [STOPPING_CRITERIA[c["strategy"]](config.replace(**c)) for c in _as_dicts(config.criteria)]
        super().__init__(config)

    def reset(self) -> None:
        for rule in self.rules:
            rule.reset()

    def should_stop(self, state: DraftState) -> bool:
        votes = (rule.should_stop(state) for rule in self.rules)
        return any(votes) if self.config.combine == "any" else all(votes)

    def update(self, feedback: RoundFeedback) -> None:
        for rule in self.rules:
            rule.update(feedback)


def _as_dicts(criteria: list) -> list[dict]:
    out = []
    for c in criteria:
        c = {"strategy": c} if isinstance(c, str) else dict(c)
        if c.get("strategy") not in STOPPING_CRITERIA or c["strategy"] == "combined":
            raise ValueError(f"criteria: unknown or nested rule {c.get('strategy')!r}")
        out.append(c)
    return out


@register("adaptive", threshold="theta_abs",
          sweep={"theta_abs": (0.5, 1.0, 2.0), "target_acceptance": (0.6, 0.7, 0.8, 0.9), "adapt_rate": (0.25, 0.5, 1.0),
                 "max_draft_len": (8, 12, 20)})
class AdaptiveEntropy(StoppingCriterion):
    """Absolute rule whose threshold follows verification feedback toward `target_acceptance`.

    After each round with acceptance rate a: theta <- clip(theta * exp(adapt_rate * (a - target)),
    theta_min, theta_max). Acceptance above target means drafting stops too early, so theta rises.
    Starts at `theta_abs` for every generation.
    """

    def reset(self) -> None:
        self.theta = self.config.theta_abs

    def should_stop(self, state: DraftState) -> bool:
        return state.entropies[-1] > self.theta

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        c = self.config
        step = math.exp(c.adapt_rate * (feedback.acceptance_rate - c.target_acceptance))
        self.theta = min(c.theta_max, max(c.theta_min, self.theta * step))

    @property
    def threshold(self) -> float:
        return self.theta


# --- the rules of the field, for comparison (../shared/references.md) ------------------------------------


@register("fixed", reads=(), threshold="max_draft_len", sweep={"max_draft_len": tuple(range(1, 13))})
class FixedLength(StoppingCriterion):
    """Plain speculative decoding: always draft `max_draft_len` tokens."""

    def should_stop(self, state: DraftState) -> bool:
        return False


@dataclass(frozen=True)
class ConfidenceParams:
    confidence_threshold: float = field(default=0.4, metadata=bounds(min=0, max=1))


@register("confidence", reads=("token_probs",), threshold="confidence_threshold", params=ConfidenceParams,
          sweep={"confidence_threshold": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), "max_draft_len": (8, 12, 20)})
class ConfidenceCriterion(StoppingCriterion):
    """Hugging Face `ConfidenceCriteria`: stop when the drafted token's probability < threshold (static)."""

    def should_stop(self, state: DraftState) -> bool:
        return state.token_probs[-1] < self.config.confidence_threshold

    @property
    def threshold(self) -> float:
        return self.config.confidence_threshold


@dataclass(frozen=True)
class HeuristicParams:
    heuristic_initial: int = field(default=5, metadata=bounds(min=1))


@register("heuristic", reads=(), threshold="heuristic_initial", params=HeuristicParams,
          sweep={"heuristic_initial": (1, 3, 5, 8), "max_draft_len": (8, 12, 20)})
class HeuristicSchedule(StoppingCriterion):
    """Hugging Face's "heuristic" schedule: draft k tokens; k += 2 after a fully accepted round, else k -= 1.

    k starts at `heuristic_initial` each generation and stays in [1, max_draft_len].
    """

    def reset(self) -> None:
        self.k = min(self.config.heuristic_initial, self.config.max_draft_len)

    def should_stop(self, state: DraftState) -> bool:
        return len(state) >= self.k

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        full = feedback.accepted == feedback.drafted
        self.k = min(self.config.max_draft_len, max(1, self.k + 2 if full else self.k - 1))

    @property
    def threshold(self) -> float:
        return float(self.k)


@dataclass(frozen=True)
class SvipParams:
    svip_gamma: float = field(default=0.15, metadata=bounds(min=0))
    svip_threshold: float = field(default=0.3, metadata=bounds(min=0))  # nats


@register("svip", reads=("shannon_nats",), threshold="svip_threshold", params=SvipParams,
          sweep={"svip_threshold": (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6), "max_draft_len": (8, 12, 20, 40)})
class SVIP(StoppingCriterion):
    """SVIP (arXiv 2411.18462): stop when sqrt(svip_gamma * H) > svip_threshold, H Shannon entropy in nats."""

    def should_stop(self, state: DraftState) -> bool:
        return math.sqrt(self.config.svip_gamma * state.shannon_nats[-1]) > self.config.svip_threshold

    @property
    def threshold(self) -> float:
        return self.config.svip_threshold**2 / self.config.svip_gamma  # the same rule as an entropy bound


@dataclass(frozen=True)
class AdaEDLParams:
    adaedl_gamma: float = field(default=0.2, metadata=bounds(min=0))
    adaedl_lambda: float = field(default=0.3, metadata=bounds(min=0, max=1))  # starting lower bound


@register("adaedl", reads=("shannon_nats",), threshold="adaedl_lambda", params=AdaEDLParams,
          sweep={"adaedl_lambda": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "target_acceptance": (0.7, 0.8, 0.9),
                 "max_draft_len": (8, 12, 20)})
class AdaEDL(StoppingCriterion):
    """AdaEDL-style (arXiv 2410.18351): stop when the acceptance lower bound 1 - sqrt(gamma * H) < lambda.

    lambda starts at `adaedl_lambda` and moves by `adapt_rate` x 0.1 x (target_acceptance - observed
    acceptance rate) after each round, within [0, 1]: low acceptance raises lambda, stopping earlier.
    """

    def reset(self) -> None:
        self.lam = self.config.adaedl_lambda

    def should_stop(self, state: DraftState) -> bool:
        bound = 1.0 - math.sqrt(self.config.adaedl_gamma * state.shannon_nats[-1])
        return bound < self.lam

    def update(self, feedback: RoundFeedback) -> None:
        if feedback.drafted == 0:
            return
        delta = 0.1 * self.config.adapt_rate * (self.config.target_acceptance - feedback.acceptance_rate)
        self.lam = min(1.0, max(0.0, self.lam + delta))

    @property
    def threshold(self) -> float:
        return self.lam


# --- cost-aware ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoodputParams:
    """Acceptance of a drafted token = sigmoid(calib_intercept + calib_slope * H + calib_prob * q), fitted on
    traces by `entspec tune`, updated online by SGD at rate calib_lr; or an isotonic curve ``calib_curve``
    ([[H, beta], ...], H ascending). ``next_*``: the next token's acceptance from the current token's statistics
    (None: the current token's beta stands in)."""

    goodput_margin: float = field(default=1.0, metadata=bounds(min=0))  # continue while gain > margin * rate * cost
    calib_intercept: float = field(default=2.5, metadata=bounds(finite=True))
    calib_slope: float = field(default=-1.5, metadata=bounds(finite=True))
    calib_prob: float = field(default=0.0, metadata=bounds(finite=True))
    calib_lr: float = field(default=0.05, metadata=bounds(min=0))
    calib_curve: list[list[float]] | None = None
    next_intercept: float | None = field(default=None, metadata=bounds(finite=True))
    next_slope: float = field(default=0.0, metadata=bounds(finite=True))
    next_prob: float = field(default=0.0, metadata=bounds(finite=True))

    def __post_init__(self) -> None:
        check_knots("calib_curve", self.calib_curve, "entropy, probability", strict=False)


@register("goodput", reads=("entropies", "token_probs"), threshold="goodput_margin", params=GoodputParams,
          sweep={"goodput_margin": (0.4, 0.55, 0.7, 0.85, 1.0, 1.2, 1.5), "max_draft_len": (12, 20)})
class Goodput(StoppingCriterion):
    """Draft one more token while it is expected to add tokens faster than the generation is producing them.

    Acceptance of a drafted token with entropy H and probability q is predicted as
    beta = sigmoid(a + b H + d q) (a calibration fitted on traces, d = 0 for entropy alone; a, b, d then
    follow the verifier's verdicts by online logistic-regression SGD). After j drafted tokens the whole
    draft survives with probability P_j = prod_i beta_i; one more token adds P_j * beta_j expected tokens (the
    next token's statistics are not known yet; the last ones stand in) and costs c + s (``cost_ratio`` +
    ``verify_slope``: drafter step plus the extra verified token, in one-token verifier calls). Stop unless
    P_j * beta_j > margin * R * (c + s), with R the generation's rate so far in tokens per verifier-call
    time (prior: plain decoding, 1). With margin 1 this is the marginal-value rule that maximises long-run
    tokens per second (docs/replay.md).
    """

    def reset(self) -> None:
        c = self.config
        self.now = [c.calib_intercept, c.calib_slope, c.calib_prob]  # beta of a drafted token from its own stats
        self.curve = None if c.calib_curve is None else ([k[0] for k in c.calib_curve], [k[1] for k in c.calib_curve])
        self.offset = 0.0  # online logit offset of the isotonic curve
        self.next = None if c.next_intercept is None else [c.next_intercept, c.next_slope, c.next_prob]
        self.tokens, self.time = 1.0, 1.0  # one pseudo-round of plain decoding: R starts at 1
        self.step = c.cost_ratio + c.verify_slope

    @staticmethod
    def _sigmoid(w: list[float], entropy: float, prob: float) -> float:
        z = w[0] + w[1] * entropy + w[2] * prob
        return 1.0 / (1.0 + math.exp(-z)) if z > -30 else 0.0

    def accept_prob(self, entropy: float, prob: float) -> float:
        if self.curve is None:
            return self._sigmoid(self.now, entropy, prob)
        beta = min(max(float(np.interp(entropy, *self.curve)), 1e-3), 1 - 1e-3)
        if self.offset == 0.0:
            return beta
        z = math.log(beta / (1 - beta)) + self.offset
        return 1.0 / (1.0 + math.exp(-z))

    def should_stop(self, state: DraftState) -> bool:
        survival = 1.0
        for h, q in zip(state.entropies, state.token_probs):
            survival *= self.accept_prob(h, q)
        h, q = state.entropies[-1], state.token_probs[-1]
        next_beta = self._sigmoid(self.next, h, q) if self.next else self.accept_prob(h, q)
        return survival * next_beta <= self.threshold * self.step

    def update(self, feedback: RoundFeedback) -> None:
        self.tokens += feedback.accepted + 1
        self.time += 1.0 + feedback.drafted * self.step
        lr = self.config.calib_lr
        stats = list(zip(feedback.entropies, feedback.token_probs))
        for i, (h, q) in enumerate(stats[: feedback.accepted + 1]):  # verdicts up to the first rejection
            accepted = i < feedback.accepted
            err = accepted - self.accept_prob(h, q)
            if self.curve is None:
                _sgd(self.now, lr, err, h, q)
            else:
                self.offset += lr * err
            if self.next and i > 0:  # token i's verdict, predicted from token i - 1 (accepted) before it was drafted
                hp, qp = stats[i - 1]
                _sgd(self.next, lr, accepted - self._sigmoid(self.next, hp, qp), hp, qp)

    @property
    def threshold(self) -> float:
        """The bar a drafted token's expected gain per unit cost must clear: margin x current rate."""
        return self.config.goodput_margin * self.tokens / self.time


def _sgd(w: list[float], lr: float, err: float, entropy: float, prob: float) -> None:
    """One step of online logistic regression on (1, H, q)."""
    w[0] += lr * err
    w[1] += lr * err * entropy
    w[2] += lr * err * prob
