"""Methods under comparison: declarations -> a flat, de-duplicated list of runnable `MethodSpec`s."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..engine.batch_cost import BatchCostModel
from ..engine.config import ConfigError, EntropyConfig
from ..engine.decoder import EntropyBasedSpeculativeDecoder
from .hf_baselines import hf_generate, hf_generate_batch
from ..records import GenerationResult
from ..rules import RULE_PARAMS, build_criterion
from ..validate import bounds, check_value

if TYPE_CHECKING:
    from .config import ExperimentConfig

_DEFAULTS = EntropyConfig().to_dict()


@dataclass(frozen=True)
class HFAssistedParams:
    """What an ``hf_assisted`` method may set (unset ones keep the library's defaults)."""

    num_assistant_tokens: int = field(default=20, metadata=bounds(min=1))
    schedule: str = field(default="constant", metadata=bounds(choices=("constant", "heuristic")))
    confidence_threshold: float = field(default=0.0, metadata=bounds(min=0, max=1))


@dataclass(frozen=True)
class MethodKind:
    """What a kind of method is. A new kind is one entry in `METHOD_KINDS` (and its branch in `MethodSpec.run`).

    ``engine``: decoded by entspec's own loop (`EntropyBasedSpeculativeDecoder`); ``batched``: runs at
    ``batch_size`` > 1; ``params``: the dataclass of the parameters it takes (an entspec method's are
    `EntropyConfig`'s); ``drafts``: uses the drafter.
    """

    name: str
    engine: bool = False
    batched: bool = True
    params: type | None = None
    drafts: bool = False


METHOD_KINDS = {kind.name: kind for kind in (
    MethodKind("entspec", engine=True, params=EntropyConfig, drafts=True),
    MethodKind("autoregressive", engine=True),
    MethodKind("hf_generate"),
    MethodKind("hf_assisted", batched=False, params=HFAssistedParams, drafts=True),
)}
KINDS = tuple(METHOD_KINDS)


@dataclass
class MethodSpec:
    """One method: its kind and parameters (for ``entspec``, the `EntropyConfig` fields that differ)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    _decoders: dict = field(default_factory=dict, repr=False, compare=False)  # see `decoder`

    @property
    def info(self) -> MethodKind:
        return METHOD_KINDS[self.kind]

    @property
    def is_rule(self) -> bool:
        """An entspec method: a stopping rule with its `EntropyConfig`."""
        return self.info.params is EntropyConfig

    @property
    def id(self) -> str:
        """A readable name from the declared parameters: ``fixed[max_draft_len=4]``, ``hf_assisted[default]``."""
        if self.info.params is None:
            return self.kind
        args = ",".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items()) if k != "strategy")
        if self.is_rule:
            return f"{self.strategy}[{args}]" if args else self.strategy
        return f"{self.kind}[{args or 'default'}]"

    @property
    def strategy(self) -> str:
        """The stopping rule of an entspec method; the kind for the others."""
        return self.params.get("strategy", _DEFAULTS["strategy"]) if self.is_rule else self.kind

    @property
    def batch_stop(self) -> str | None:
        """How an entspec method stops a batch's drafting ("rows" or "cost"); None for the other kinds."""
        return self.entropy_config().batch_stop if self.is_rule else None

    @property
    def batch_layout(self) -> str | None:
        """How an entspec method lays a batch out in a forward ("padded" or "packed"); None for the other kinds."""
        return self.entropy_config().batch_layout if self.is_rule else None

    def entropy_config(self) -> EntropyConfig:
        return EntropyConfig(**self.params)

    def decoder(self, drafter: torch.nn.Module, verifier: torch.nn.Module,
                settings: dict[str, Any]) -> EntropyBasedSpeculativeDecoder:
        """entspec's decoder for this method on this pair, built once and reused across units (a static cache
        and its compiled graphs are made once per experiment, not per prompt)."""
        options = {"kv_cache": settings.get("kv_cache", "dynamic"), "compile": settings.get("compile", False),
                   "cache_len": settings.get("max_sequence_length") if settings.get("kv_cache") == "static" else None}
        key = (id(drafter), id(verifier), tuple(options.items()))
        if key not in self._decoders:
            self._decoders.clear()  # one pair at a time: a new pair frees the old decoder's caches
            self._decoders[key] = EntropyBasedSpeculativeDecoder(
                drafter if self.info.drafts else None, verifier, self.entropy_config() if self.is_rule else None,
                **options)
        return self._decoders[key]

    def warm_up(self, drafter: torch.nn.Module, verifier: torch.nn.Module, prompt_len: int,
                settings: dict[str, Any]) -> None:
        """Compile every graph a timed unit can use (nothing to do unless ``compile`` is set)."""
        if self.info.engine and settings.get("compile"):
            self.decoder(drafter, verifier, settings).warm_up(prompt_len, settings["max_new_tokens"])

    def config_dict(self) -> dict[str, Any]:
        """Everything that defines the method, for the results row."""
        return self.entropy_config().to_dict() if self.is_rule else dict(self.params)

    def run(self, drafter: torch.nn.Module, verifier: torch.nn.Module, input_ids: torch.Tensor,
            settings: dict[str, Any], seed: int,
            batch_costs: dict[str, BatchCostModel] | BatchCostModel | None = None) -> GenerationResult:
        if self.batch_stop == "cost":  # that rule prices the batched loop's steps: a batch of one
            return self.run_batch(drafter, verifier, [input_ids], settings, seed, batch_costs=batch_costs)[0]
        gen = _generation(settings)
        if self.info.engine:
            return self.decoder(drafter, verifier, settings).generate(input_ids, seed=seed, **gen)
        assistant = {"drafter": drafter, **self.params} if self.info.drafts else {}
        return hf_generate(verifier, input_ids, seed=seed, **gen, **assistant)

    def run_batch(self, drafter: torch.nn.Module, verifier: torch.nn.Module, prompts: list[torch.Tensor],
                  settings: dict[str, Any], seed: int, pad_token_id: int = 0,
                  batch_costs: dict[str, BatchCostModel] | BatchCostModel | None = None) -> list[GenerationResult]:
        """The method on ``prompts`` decoded together (one result per prompt, in order); every row gets ``seed``.
        ``batch_costs``: what ``batch_stop="cost"`` prices drafter steps with (per batch layout, or one table)."""
        if not self.info.batched:
            raise ConfigError(f"{self.kind} runs at batch_size 1 only")
        gen = _generation(settings)
        if self.info.engine:
            if isinstance(batch_costs, dict):
                batch_costs = batch_costs.get(self.batch_layout)
            costs = {"batch_costs": batch_costs} if self.batch_stop == "cost" else {}
            return self.decoder(drafter, verifier, settings).generate_batch(prompts, seed=seed, **gen, **costs)
        return hf_generate_batch(verifier, prompts, pad_token_id=pad_token_id, seed=seed, **gen)


def _generation(settings: dict[str, Any]) -> dict[str, Any]:
    """The generation settings every method takes."""
    gen = {k: settings[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p")}
    gen["ignore_eos"] = settings.get("ignore_eos", False)
    return gen


def _short(value: Any) -> str:
    """A value as it appears in a method id; a curve (a list of knots) as a short digest of its knots."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        digest = hashlib.sha1(json.dumps(value).encode()).hexdigest()[:6]
        return f"{len(value)}knots#{digest}"
    if isinstance(value, list):
        return "+".join(_short(v) if not isinstance(v, dict) else v.get("strategy", "?") for v in value)
    return str(value)


def expand_methods(config: "ExperimentConfig") -> list[MethodSpec]:
    """Baselines, declared methods (list values swept), grid product and one-factor ablation, de-duplicated."""
    specs: list[MethodSpec] = []
    if config.baselines:
        specs += [MethodSpec("autoregressive"), MethodSpec("hf_generate")]
        specs += [MethodSpec("hf_assisted")] if config.batch_size == 1 else []  # transformers: batch size 1 only
    for i, decl in enumerate(config.methods):
        where = f"methods[{i}]"
        if not isinstance(decl, dict):
            raise ConfigError(f"{where}: must be a mapping like {{strategy: absolute, theta_abs: 1.5}}")
        decl = dict(decl)
        kind = decl.pop("kind", "entspec")
        if kind in METHOD_KINDS and not METHOD_KINDS[kind].batched and config.batch_size > 1:
            raise ConfigError(f"{where}.kind: {kind} runs at batch_size 1 only (transformers refuses batched "
                              f"assisted generation; got batch_size {config.batch_size})")
        specs += [_make(kind, params, where) for params in _sweep(decl)]
    if config.grid is not None:
        base, axes = dict(config.grid.get("base") or {}), config.grid["axes"]
        if not isinstance(axes, dict) or not axes:
            raise ConfigError("grid.axes: must map field names to lists of values")
        for values in itertools.product(*(_as_list(v) for v in axes.values())):
            specs.append(_make("entspec", {**base, **dict(zip(axes, values))}, "grid"))
    if config.ablation is not None:
        base, vary = dict(config.ablation["base"] or {}), config.ablation["vary"]
        if not isinstance(vary, dict) or not vary:
            raise ConfigError("ablation.vary: must map field names to lists of values")
        specs.append(_make("entspec", base, "ablation.base"))
        for name, values in vary.items():
            for value in _as_list(values):
                specs.append(_make("entspec", {**base, name: value}, "ablation.vary"))
    unique: dict[str, MethodSpec] = {}
    for spec in specs:  # the same effective configuration declared twice runs once
        unique.setdefault(json.dumps([spec.kind, spec.config_dict()], sort_keys=True, default=str), spec)
    return list(unique.values())


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _list_depth(name: str) -> int:
    """How deeply one value of an `EntropyConfig` field or rule parameter nests lists, from its type hint
    (``criteria``: 1, ``calib_curve``/``verify_curve``: 2, a number: 0). Such fields sweep only as a list of values."""
    hint = RULE_PARAMS[name].hint if name in RULE_PARAMS else typing.get_type_hints(EntropyConfig).get(name, Any)
    depth = 0
    while True:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is list:
            depth, hint = depth + 1, (args or [Any])[0]
        elif typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
            hint = args[0]
        else:
            return depth


def _depth(value: Any) -> int:
    return 1 + _depth(value[0]) if isinstance(value, list) and value else int(isinstance(value, list))


def _sweep(decl: dict[str, Any]) -> list[dict[str, Any]]:
    """List values are swept (product); list-valued fields (``criteria``, ``calib_curve``) sweep only as a list of
    their values."""
    axes = {k: v for k, v in decl.items()
            if isinstance(v, list) and all(_depth(x) >= _list_depth(k) for x in v)}
    fixed = {k: v for k, v in decl.items() if k not in axes}
    return [{**fixed, **dict(zip(axes, values))} for values in itertools.product(*axes.values())]


def _make(kind: str, params: dict[str, Any], where: str) -> MethodSpec:
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: must be one of {list(KINDS)} (got {kind!r})")
    params_class = METHOD_KINDS[kind].params
    if params_class is EntropyConfig:
        try:  # the one validation path: unknown fields, types, bounds, the rule's own parameters
            build_criterion(EntropyConfig(**params))  # builds combined's inner rules: unknown ones fail here
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}.{err}") from None
    elif params_class is not None:
        declared = {f.name: f for f in dataclasses.fields(params_class)}
        hints = typing.get_type_hints(params_class)
        for name, value in params.items():
            if name not in declared:
                raise ConfigError(f"{where}.{name}: unknown {kind} parameter (allowed: {sorted(declared)})")
            check_value(f"{where}.{name}", value, hints[name], declared[name].metadata)
    elif params:
        raise ConfigError(f"{where}.{sorted(params)[0]}: {kind} takes no parameters")
    return MethodSpec(kind, dict(params))
