"""`EntropyConfig`: the drafting policy, typed and validated on one path (`entspec.validate`).

The fields here are the ones every rule, the drafter and the gate share. A rule's own parameters live on the
rule: a small dataclass given to `register(..., params=...)` (entspec.rules). `EntropyConfig`
accepts them as keywords like its own fields (``EntropyConfig(strategy="svip", svip_threshold=0.3)``), checks
them against the rule's declaration, and reads them as attributes (``config.svip_threshold``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..rules import RULE_PARAMS, RULES
from ..rules.base import SHARED_FIELDS, check_names
from ..validate import ConfigError, bounds, check, check_fields, check_knots, check_value
from .entropy import ENTROPY_TYPES

__all__ = ["ConfigError", "EntropyConfig"]


@dataclass(frozen=True, init=False)
class EntropyConfig:
    """How the drafter decides when to stop drafting.

    Thresholds are entropies in ``entropy_unit`` (nats by default) of the drafter's processed next-token
    distribution (after temperature / top-k / top-p; at temperature 0, of its temperature-1 distribution).
    A drafted token whose entropy trips the rule is still proposed (its draft cost is already paid and
    verifying it is nearly free); drafting stops after it.

    Frozen: a decoder's policy cannot change under it; derive another with ``config.replace(field=value)``.
    ``rule_params`` holds the values of rules' own parameters that differ from their declared defaults.
    """

    strategy: str = "absolute"  # a name in entspec.rules.STOPPING_CRITERIA
    entropy_type: str = field(default="shannon", metadata=bounds(choices=ENTROPY_TYPES))
    entropy_unit: str = field(default="nats", metadata=bounds(choices=("nats", "bits")))
    renyi_alpha: float = field(default=2.0, metadata=bounds(min=0))  # order of the Rényi entropy (inf = min-entropy)
    entropy_topk: int = field(default=10, metadata=bounds(min=1))  # k of the top-k entropy
    max_draft_len: int = field(default=8, metadata=bounds(min=1))  # hard cap of every rule; `fixed` drafts exactly this
    min_draft_len: int = field(default=1, metadata=bounds(min=0))  # the rule is not consulted before this many tokens
    # absolute: stop when H_t > theta_abs; the starting threshold of adaptive, the fallback of relative and window
    theta_abs: float = field(default=2.0, metadata=bounds(min=0))
    # adaptive rules (adaptive, adaedl): move toward a target acceptance rate at adapt_rate
    target_acceptance: float = field(default=0.8, metadata=bounds(min=0, max=1))
    adapt_rate: float = field(default=0.5, metadata=bounds(min=0))
    theta_min: float = field(default=0.05, metadata=bounds(min=0))  # adaptive: bounds of the moving threshold
    theta_max: float = field(default=10.0, metadata=bounds(min=0))
    # Costs in units of a one-token verifier call (from the cost model; `entspec tune` writes measured values):
    cost_ratio: float = field(default=0.45, metadata=bounds(min=0, finite=True))  # c: one drafter step
    verify_slope: float = field(default=0.02, metadata=bounds(min=0, finite=True))  # s: each extra verified token
    # The measured verifier call over m tokens relative to one token, [[m, verify(m) / verify(1)], ...] (the cost
    # model's; `entspec tune` writes it), interpolated; None: 1 + verify_slope (m - 1). Read by the gate.
    verify_curve: list[list[float]] | None = None
    # gate (entspec.engine.gate): before each round, draft nothing while speculative rounds emit fewer tokens per unit
    # of cost than plain decoding; probe after 1, 2, 4, ... 16 rounds, and a probe that pays reopens it. Never
    # changes what is emitted.
    # Off by default: measured to cost 3-4% with the bf16 drafter when sampling at T = 0.7 on spec6 (docs/logs/2026-11-27-gate.md).
    gate: bool = False
    gate_memory: float = field(default=0.9, metadata=bounds(min=0, max=1))  # decay per speculative round (~10 rounds)
    gate_margin: float = field(default=1.0, metadata=bounds(min=0, max=1))  # close below margin x plain's rate
    # The drafter's context window: it reads only the last N to 2N committed tokens (prefilled with the prompt's
    # last N, rebuilt on the last N when it holds 2N; `entspec.engine.drafter`). None: the whole sequence. Never
    # changes what is emitted (the verifier reads everything); it shortens the drafter's prefill and its steps.
    drafter_context: int | None = field(default=None, metadata=bounds(min=1))
    # When the drafter reads the prompt: "upfront", in the prefill beside the verifier's; "deferred", after the first
    # new token, which the verifier's prefill gives alone (so the time to first token is plain decoding's): the first
    # round drafts nothing and the drafter prefills at the start of the second (`entspec.engine.round.draft_limit`).
    # A batch whose batch stop never drafts never prefills the drafter. Never changes what is emitted.
    drafter_prefill: str = field(default="upfront", metadata=bounds(choices=("upfront", "deferred")))
    # Batched decoding (generate_batch): "rows", each row drafts until its own rule stops it; "cost", besides, the
    # whole lock step stops when one more drafter step's expected tokens per second fall below the round's, priced
    # with a measured `BatchCostModel` (entspec.engine.batch_cost). Never changes what is emitted.
    batch_stop: str = field(default="rows", metadata=bounds(choices=("rows", "cost")))
    # How a batch's rows share a forward (entspec.engine.batch_kv): "padded", a [B, W] forward padded to the longest
    # segment; "packed", every row's tokens back to back in one sequence, so a forward costs the tokens the rows feed
    # (a row that stops drafting early stops costing). Never changes what is emitted.
    batch_layout: str = field(default="padded", metadata=bounds(choices=("padded", "packed")))
    # Chunked drafting: a rule that reads statistics reads them every draft_chunk tokens (one device -> host read per
    # chunk instead of per token) and stops at its first stop inside the chunk; the drafted prefix is the one the
    # per-token loop keeps, the extra drafter steps are the price. 1: read every token. Never changes what is emitted.
    draft_chunk: int = field(default=1, metadata=bounds(min=1))
    record_all_entropies: bool = True  # trace every entropy type per drafted token (for analysis)
    rule_params: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        own = {f.name: f for f in dataclasses.fields(self)}
        params = dict(values.pop("rule_params", None) or {})
        params.update({k: values.pop(k) for k in list(values) if k not in own})
        for name, f in own.items():
            if name != "rule_params":
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                object.__setattr__(self, name, values.get(name, default))
        declared = RULE_PARAMS
        for name in params:
            if name not in declared:
                raise ConfigError(f"{name}: unknown EntropyConfig field")
        kept = {k: v for k, v in params.items() if v != declared[k].default}  # defaults are not stored twice
        object.__setattr__(self, "rule_params", dict(sorted(kept.items())))
        for name, decl in declared.items():  # plain attributes: rules read them per drafted token
            object.__setattr__(self, name, kept[name] if name in kept else _copy(decl.default))
        self.validate()

    def __getattr__(self, name: str) -> Any:
        """A rule parameter registered after this config was made: its value here, else its declared default."""
        if name.startswith("__") or name == "rule_params":
            raise AttributeError(name)
        params = self.__dict__.get("rule_params", {})
        if name in params:
            return params[name]
        declared = RULE_PARAMS
        if name in declared:
            return _copy(declared[name].default)
        raise AttributeError(f"EntropyConfig has no field or rule parameter {name!r}")

    def validate(self) -> None:
        check(self.strategy in RULES, "strategy", self.strategy, f"must be one of {sorted(RULES)}")
        check_fields(self)
        check(self.min_draft_len <= self.max_draft_len, "min_draft_len", self.min_draft_len,
              "must be in [0, max_draft_len]")
        check(self.theta_min <= self.theta_max, "theta_min", self.theta_min, "must be <= theta_max")
        check_knots("verify_curve", self.verify_curve, "verified tokens, relative cost", min_x=1, positive_y=True)
        declared = RULE_PARAMS
        for name, value in self.rule_params.items():
            check_value(name, value, declared[name].hint, declared[name].metadata)
        for info in _rules_with_params(self):
            info.make_params(self)  # the rule's own cross-field checks (its dataclass' __post_init__)

    def params_of(self, strategy: str | None = None) -> dict[str, Any]:
        """The parameters a rule declares (``strategy``'s, default this config's), with their values here."""
        info = RULES[strategy or self.strategy]
        return {name: getattr(self, name) for name in info.param_names}

    def replace(self, **changes: Any) -> "EntropyConfig":
        """A validated copy with some fields (or rule parameters) changed."""
        return EntropyConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Flat: the shared fields, the configured rule's parameters (defaults included) and any other set ones."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rule_params"}
        out.update(self.params_of())
        out.update(self.rule_params)
        return {k: _copy(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EntropyConfig":
        return cls(**data)

    @classmethod
    def parameter_names(cls) -> set[str]:
        """Every name ``EntropyConfig(...)`` accepts: the shared fields and every registered rule's parameters."""
        return {f.name for f in dataclasses.fields(cls) if f.name != "rule_params"} | set(RULE_PARAMS)


def _copy(value: Any) -> Any:
    return [_copy(v) for v in value] if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _rules_with_params(config: EntropyConfig) -> list[Any]:
    """The rules whose parameters this config sets or uses (its own, a combined rule's parts, the set ones)."""
    names = {config.strategy} | {RULE_PARAMS[name].owner for name in config.rule_params}
    return [RULES[n] for n in sorted(names) if n in RULES and RULES[n].params is not None]


SHARED_FIELDS.update(f.name for f in dataclasses.fields(EntropyConfig) if f.name != "rule_params")
for _info in RULES.values():  # the rules registered before this module loaded
    check_names(_info)
