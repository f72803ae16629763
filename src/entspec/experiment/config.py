"""`ExperimentConfig`: one typed, validated declaration of an experiment, loadable from YAML or Python.

Validation happens here and only here: unknown keys, wrong types and impossible values get a one-line
`ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.config import ConfigError, EntropyConfig


@dataclass
class ExperimentConfig:
    """An experiment: a model pair, prompts, generation settings, and the methods to compare.

    ``methods`` is a list of method declarations (dicts). Each has a ``kind``: ``"entspec"`` (default; any
    `EntropyConfig` field, e.g. ``{"strategy": "absolute", "theta_abs": [1.0, 2.0]}`` — a list value is
    swept), ``"autoregressive"``, ``"hf_generate"`` or ``"hf_assisted"`` (``num_assistant_tokens``,
    ``schedule``, ``confidence_threshold``). ``grid`` is ``{"base": {...}, "axes": {field: [values]}}``: the
    product of the axes on top of ``base``. ``ablation`` is ``{"base": {...}, "vary": {field: [values]}}``:
    one factor at a time from ``base``. ``baselines`` adds autoregressive, Hugging Face `generate` and Hugging
    Face assisted generation (library defaults) unless set to False.
    """

    # --- the original design's fields
    drafter_model_path: str = "qwen2.5-coder-0.5b-instruct"  # registry name, folder, .gguf or hub id
    verifier_model_path: str = "qwen2.5-coder-1.5b-instruct"
    dataset_name: str = "mix"  # built-in dataset name or a local .jsonl/.txt/.csv path
    dataset_split: str = "test"
    num_samples: int = 6
    max_sequence_length: int = 1024  # prompt + new tokens; longer prompts keep their last tokens
    experiment_name: str = "quick"
    output_dir: str = "runs/quick"
    # --- generation
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    device: str = "auto"
    # int8 drafter weights (entspec.models.quantize): none | int8 | int8-weight-only | int8-dynamic (CPU);
    # the verifier is never quantized, so outputs stay the verifier's
    drafter_quantization: str = "none"
    ignore_eos: bool = False  # generate exactly max_new_tokens (comparable lengths across methods)
    seeds: list[int] = field(default_factory=lambda: [0])
    categories: list[str] | None = None  # keep only these prompt categories
    exclude_prompts: list[str] | None = None  # prompt ids left out before sampling (e.g. tuning prompts)
    # --- methods
    methods: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    baselines: bool = True
    # --- execution
    warmup_tokens: int = 8  # one untimed generation per method before timing starts
    threads: int | None = None  # torch CPU threads (None: torch's default)
    analyze: bool = True  # run the analysis after the experiment (run_full_experiment)
    # --- where the units run (docs/cluster.md); not identity fields: a run may resume on another executor
    executor: str = "local"  # local: this process | ray: Ray actors, each holding the model pair once
    ray_address: str | None = None  # None: start a local Ray instance | "auto" | "HOST:PORT" | "ray://HOST:PORT"
    ray_workers: int | None = None  # None: one per GPU of the cluster, else one per `threads` CPUs (1 if unset)

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation (the one place)
    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

        def check(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.max_sequence_length > self.max_new_tokens, "max_sequence_length", "must exceed max_new_tokens")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(self.top_k is None or self.top_k >= 1, "top_k", "must be >= 1 or null")
        check(self.top_p is None or 0 < self.top_p <= 1, "top_p", "must be in (0, 1] or null")
        check(self.dtype in DTYPE_NAMES, "dtype", "must be auto, float32, bfloat16 or float16")
        self.dtype = canonical_dtype(self.dtype)  # bf16 and bfloat16 are one setting, saved under one name
        from ..models.quantize import QUANTIZATIONS

        check(self.drafter_quantization in QUANTIZATIONS, "drafter_quantization",
              f"must be one of {', '.join(QUANTIZATIONS)}")
        check(len(self.seeds) >= 1, "seeds", "must list at least one seed")
        check(all(s >= 0 for s in self.seeds), "seeds", "must be >= 0")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat a seed (a seed is part of a unit key)")
        check(self.categories is None or len(set(self.categories)) == len(self.categories), "categories",
              "must not repeat a category")
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device",
              "must be auto, cpu, cuda, cuda:N or mps")
        check(self.warmup_tokens >= 0, "warmup_tokens", "must be >= 0")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(self.executor in ("local", "ray"), "executor", "must be local or ray")
        check(self.ray_address is None or bool(self.ray_address.strip()), "ray_address", "must not be empty")
        check(self.ray_workers is None or self.ray_workers >= 1, "ray_workers", "must be >= 1 or null")
        check(bool(self.experiment_name.strip()), "experiment_name", "must not be empty")
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        if self.grid is not None:
            _check_keys("grid", self.grid, required={"axes"}, allowed={"base", "axes"})
        if self.ablation is not None:
            _check_keys("ablation", self.ablation, required={"base", "vary"}, allowed={"base", "vary"})
        from .methods import expand_methods  # validates every method declaration

        check(len(expand_methods(self)) >= 1, "methods", "declare at least one method (or keep baselines)")

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown ExperimentConfig field")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "ExperimentConfig":
        """Load ``path``; ``overrides`` are ``key=value`` strings (values parsed as YAML), applied last."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of fields at the top level")
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected key=value")
            try:
                data[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ConfigError(f"--set {key.strip()}: not valid YAML ({str(err).splitlines()[0]})") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def generation_settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p, "dtype": self.dtype, "device": self.device,
                "drafter_quantization": self.drafter_quantization, "ignore_eos": self.ignore_eos}


# dtype spellings -> the one name saved and compared
DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: Any) -> Any:
    """``bf16`` -> ``bfloat16``, ``fp32`` -> ``float32``, ...; anything else unchanged."""
    return DTYPE_NAMES.get(name, name) if isinstance(name, str) else name


def _check_keys(name: str, value: dict, required: set[str], allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a mapping (got {value!r})")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (allowed: {sorted(allowed)})")
    missing = sorted(required - set(value))
    if missing:
        raise ConfigError(f"{name}.{missing[0]}: required")


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Check ``value`` against a simple type hint (int, float, str, bool, list[...], dict[...], X | None)."""
    if not _matches(value, hint):
        shown = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
        shown = shown.replace("typing.", "")
        raise ConfigError(f"{name}: expected {shown}, got {type(value).__name__} {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, arg) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def entropy_config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(EntropyConfig)}
