"""`ExperimentConfig`: one typed, validated declaration of an experiment, loadable from YAML or Python.

Validation goes through `entspec.validate`, like `EntropyConfig`'s: each field's type hint and declared bounds,
then the checks that relate fields. Unknown keys, wrong types and impossible values get a one-line
`ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..validate import DTYPE_NAMES, ConfigError, bounds, canonical_dtype, check, check_fields, check_keys, parse_overrides


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
    num_samples: int = field(default=6, metadata=bounds(min=1))
    max_sequence_length: int = 1024  # prompt + new tokens; longer prompts keep their last tokens
    experiment_name: str = "quick"
    output_dir: str = "runs/quick"
    # --- generation
    max_new_tokens: int = field(default=64, metadata=bounds(min=1))
    temperature: float = field(default=0.0, metadata=bounds(min=0))
    top_k: int | None = field(default=None, metadata=bounds(min=1))
    top_p: float | None = None
    dtype: str = field(default="auto", metadata=bounds(choices=tuple(DTYPE_NAMES)))  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    # int8 drafter weights (entspec.models.quantize): none | int8 | int8-weight-only | int8-dynamic (CPU); int8: dynamic
    # for a float32 drafter on CPU, else weight-only; the verifier is never quantized, so outputs stay the verifier's
    drafter_quantization: str = "none"
    # the Linear product's layout on CPU (entspec.models.cpu_linear): auto (weight-major for float32 on CPU, where
    # few-token products were 2-4x faster so) | weight-major | torch; every method of the run gets the same models
    cpu_linear: str = field(default="auto", metadata=bounds(choices=("auto", "weight-major", "torch")))
    ignore_eos: bool = False  # generate exactly max_new_tokens (comparable lengths across methods)
    # entspec's KV cache (docs/guarantees.md): dynamic (transformers' DynamicCache, cropped on rejection) | static
    # (preallocated; rollback moves the write position). compile: torch.compile the static path's forwards
    # (true: reduce-overhead on CUDA, default elsewhere; or a mode name). The Hugging Face baselines ignore both.
    kv_cache: str = "dynamic"
    compile: bool | str = False
    # rows decoded together (entspec's batched engine, HF generate with padding); results stay one row per
    # (method, prompt, seed). hf_assisted runs at 1 only (transformers refuses batched assisted generation).
    batch_size: int = field(default=1, metadata=bounds(min=1))
    seeds: list[int] = field(default_factory=lambda: [0])
    categories: list[str] | None = None  # keep only these prompt categories
    exclude_prompts: list[str] | None = None  # prompt ids left out before sampling (e.g. tuning prompts)
    # --- methods
    methods: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    baselines: bool = True
    # --- execution
    warmup_tokens: int = field(default=8, metadata=bounds(min=0))  # one untimed generation per method before timing starts
    threads: int | None = field(default=None, metadata=bounds(min=1))  # torch CPU threads (None: torch's default)
    analyze: bool = True  # run the analysis after the experiment (run_full_experiment)
    # --- where the units run (docs/cluster.md); not identity fields: a run may resume on another executor
    executor: str = field(default="local", metadata=bounds(choices=("local", "ray")))  # local: this process | ray: Ray actors, each holding the model pair once
    ray_address: str | None = None  # None: start a local Ray instance | "auto" | "HOST:PORT" | "ray://HOST:PORT"
    ray_workers: int | None = field(default=None, metadata=bounds(min=1))  # None: one per GPU of the cluster, else one per `threads` CPUs (1 if unset)

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- validation (the one place)
    def validate(self) -> None:
        check_fields(self)  # types and declared bounds

        def rule(ok: bool, name: str, why: str) -> None:
            check(ok, name, getattr(self, name), why)

        rule(self.max_sequence_length > self.max_new_tokens, "max_sequence_length", "must exceed max_new_tokens")
        rule(self.top_p is None or 0 < self.top_p <= 1, "top_p", "must be in (0, 1] or null")
        self.dtype = canonical_dtype(self.dtype)  # bf16 and bfloat16 are one setting, saved under one name
        from ..models.quantize import QUANTIZATIONS

        rule(self.drafter_quantization in QUANTIZATIONS, "drafter_quantization",
             f"must be one of {', '.join(QUANTIZATIONS)}")
        from ..engine.caches import check_cache_options

        try:
            check_cache_options(self.kv_cache, self.compile)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        rule(self.batch_size == 1 or self.kv_cache == "dynamic", "batch_size",
             "batched decoding needs kv_cache: dynamic")
        rule(self.batch_size == 1 or self.executor == "local", "batch_size", "the ray executor runs batch_size 1 only")
        rule(len(self.seeds) >= 1, "seeds", "must list at least one seed")
        rule(all(s >= 0 for s in self.seeds), "seeds", "must be >= 0")
        rule(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat a seed (a seed is part of a unit key)")
        rule(self.categories is None or len(set(self.categories)) == len(self.categories), "categories",
             "must not repeat a category")
        rule(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device",
             "must be auto, cpu, cuda, cuda:N or mps")
        rule(self.ray_address is None or bool(self.ray_address.strip()), "ray_address", "must not be empty")
        rule(bool(self.experiment_name.strip()), "experiment_name", "must not be empty")
        rule(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        if self.grid is not None:
            check_keys("grid", self.grid, required={"axes"}, allowed={"base", "axes"})
        if self.ablation is not None:
            check_keys("ablation", self.ablation, required={"base", "vary"}, allowed={"base", "vary"})
        from .methods import expand_methods  # validates every method declaration

        rule(len(expand_methods(self)) >= 1, "methods", "declare at least one method (or keep baselines)")

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
        parse_overrides(overrides, data)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def generation_settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p, "dtype": self.dtype, "device": self.device,
                "drafter_quantization": self.drafter_quantization, "cpu_linear": self.cpu_linear,
                "ignore_eos": self.ignore_eos,
                "kv_cache": self.kv_cache, "compile": self.compile, "max_sequence_length": self.max_sequence_length,
                "batch_size": self.batch_size}
